"""The ``jobmesh`` user commands and the Python client against a real scheduler and worker
(processes on a fresh database): what a person at a terminal and a script would see."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from core import errors
from core.domain import Job, JobState, JobType, OutputChunk, Run, RunStatus, Session
from db import migrate
from jobmesh_client import Client, SyncClient
from tests.support.processes import ROOT, Proc, base_env, free_port, start
from tests.support.services import REDIS_TEST_URL, mysql, new_database

pytestmark = pytest.mark.e2e

ADMIN_EMAIL = "root@example.com"
PASSWORD = "correct horse battery"


@dataclass
class CliMesh:
    server: str
    user_email: str

    def env(self, config: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
        env.update(JOBMESH_SERVER=self.server, XDG_CONFIG_HOME=str(config), PYTHONUNBUFFERED="1", **extra)
        return env

    def jobmesh(self, config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher", *args],
            cwd=ROOT,
            env=self.env(config),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def login(self, config: Path, email: str = "") -> None:
        done = subprocess.run(
            [sys.executable, "-m", "launcher", "login", "--email", email or self.user_email],
            cwd=ROOT,
            env=self.env(config, JOBMESH_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def cli_mesh() -> Iterator[CliMesh]:
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    client.close()
    name, url = new_database()
    migrate.upgrade(url)
    port = free_port()
    env = base_env(
        url,
        REDIS_TEST_URL,
        JOBMESH_SCHEDULER_PORT=str(port),
        JOBMESH_SCHEDULER_ADDR=f"127.0.0.1:{port}",
        JOBMESH_ADMIN_EMAIL=ADMIN_EMAIL,
        JOBMESH_ADMIN_PASSWORD=PASSWORD,
        JOBMESH_ACCESS_TOKEN_TTL_SECONDS="3600",
    )
    procs: list[Proc] = []
    try:
        for module in ("scheduler_svc.main", "worker_svc.main"):
            proc = start(module, env)
            procs.append(proc)
            proc.read_until(" ready ")
        server = f"127.0.0.1:{port}"
        with SyncClient.connect(server) as c:
            c.auth.sign_up("ada", "ada@example.com", PASSWORD)
        yield CliMesh(server, "ada@example.com")
    finally:
        for proc in procs:
            proc.kill()
        mysql(f"DROP DATABASE IF EXISTS {name}")


def test_login_keeps_the_tokens_readable_by_the_user_only(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    credentials = tmp_path / "jobmesh" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    stored = json.loads(credentials.read_text())["servers"][cli_mesh.server]
    assert stored["access_token"] and stored["refresh_token"] and stored["email"] == cli_mesh.user_email

    me = cli_mesh.jobmesh(tmp_path, "whoami", "--output", "json")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["email"] == cli_mesh.user_email


def test_an_expired_access_token_is_renewed_and_stored(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    credentials = tmp_path / "jobmesh" / "credentials.json"
    data = json.loads(credentials.read_text())
    data["servers"][cli_mesh.server]["access_token"] = "not-a-valid-token"
    credentials.write_text(json.dumps(data))

    listed = cli_mesh.jobmesh(tmp_path, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    renewed = json.loads(credentials.read_text())["servers"][cli_mesh.server]
    assert renewed["access_token"] not in ("", "not-a-valid-token")
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_not_signed_in_exits_4(cli_mesh: CliMesh, tmp_path: Path) -> None:
    listed = cli_mesh.jobmesh(tmp_path, "jobs", "list")
    assert listed.returncode == 4
    assert "jobmesh login" in listed.stderr


def test_a_job_created_from_a_file_is_listed_as_a_table_and_as_json(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    script = tmp_path / "backup.py"
    script.write_text("print('backing up')\n")
    created = cli_mesh.jobmesh(
        tmp_path,
        "jobs",
        "create",
        "--script",
        str(script),
        "--cron",
        "0 2 * * *",
        "--tz",
        "Europe/Berlin",
        "-o",
        "json",
    )
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["name"] == "backup" and job["scriptContent"] == "print('backing up')\n"
    assert job["cronExpr"] == "0 2 * * *" and job["timezone"] == "Europe/Berlin"

    table = cli_mesh.jobmesh(tmp_path, "jobs", "list")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if job["id"] in line)
    assert "backup" in row and "0 2 * * * (Europe/Berlin)" in row and "ACTIVE" in row
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "TYPE"]

    as_json = cli_mesh.jobmesh(tmp_path, "--output", "json", "jobs", "list")
    assert as_json.returncode == 0, as_json.stderr
    assert job["id"] in [j["id"] for j in json.loads(as_json.stdout)["jobs"]]

    shown = cli_mesh.jobmesh(tmp_path, "jobs", "get", job["id"], "-o", "json")
    assert json.loads(shown.stdout)["id"] == job["id"]


def test_a_bad_cron_names_the_field_and_exits_2(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    created = cli_mesh.jobmesh(tmp_path, "jobs", "create", "--script", str(script), "--cron", "61 * * * *")
    assert created.returncode == 2
    assert re.search(r"^error: job\.cron_expr: .+", created.stderr, re.MULTILINE), created.stderr
    listed = cli_mesh.jobmesh(tmp_path, "-o", "json", "jobs", "list")
    assert "61 * * * *" not in listed.stdout


def test_an_unknown_job_exits_3(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    shown = cli_mesh.jobmesh(tmp_path, "jobs", "get", str(uuid.uuid4()))
    assert shown.returncode == 3, shown.stderr


def test_logs_follow_prints_output_while_the_run_runs_and_exits_with_its_code(
    cli_mesh: CliMesh, tmp_path: Path
) -> None:
    cli_mesh.login(tmp_path)
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\n"
        "print('first line', flush=True)\n"
        "time.sleep(4)\n"
        "print('last line', flush=True)\n"
        "sys.exit(3)\n"
    )
    created = cli_mesh.jobmesh(tmp_path, "jobs", "create", "--script", str(script), "--cron", "0 0 1 1 *", "-o", "json")
    assert created.returncode == 0, created.stderr
    job_id = json.loads(created.stdout)["id"]
    started = cli_mesh.jobmesh(tmp_path, "jobs", "run", job_id, "-o", "json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]

    follower = subprocess.Popen(
        [sys.executable, "-m", "launcher", "runs", "logs", run_id, "--follow"],
        cwd=ROOT,
        env=cli_mesh.env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first line\n"
        # The line came while the script still sleeps: the run has not ended.
        now = cli_mesh.jobmesh(tmp_path, "runs", "get", run_id, "-o", "json")
        assert json.loads(now.stdout)["status"] == "RUN_STATUS_RUNNING"
        rest, errors = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert rest == "last line\n"
    assert follower.returncode == 3, errors
    ended = cli_mesh.jobmesh(tmp_path, "runs", "list", job_id, "-o", "json")
    assert [r["status"] for r in json.loads(ended.stdout)["runs"]] == ["RUN_STATUS_FAILED"]


def test_run_now_and_follow_exits_0_for_a_run_that_succeeds(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    script = tmp_path / "hello.py"
    script.write_text("print('hello there')\n")
    created = cli_mesh.jobmesh(tmp_path, "jobs", "create", "--script", str(script), "--cron", "0 0 1 1 *", "-o", "json")
    job_id = json.loads(created.stdout)["id"]
    ran = cli_mesh.jobmesh(tmp_path, "jobs", "run", job_id, "--follow")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello there\n"
    assert "SUCCEEDED" in ran.stderr

    runs = cli_mesh.jobmesh(tmp_path, "runs", "list", job_id)
    assert "SUCCEEDED" in runs.stdout and "MANUAL" in runs.stdout
    logs = cli_mesh.jobmesh(tmp_path, "runs", "logs", json_run_id(cli_mesh, tmp_path, job_id))
    assert logs.stdout == "hello there\n"


def json_run_id(cli_mesh: CliMesh, config: Path, job_id: str) -> str:
    listed = cli_mesh.jobmesh(config, "runs", "list", job_id, "-o", "json")
    run_id: str = json.loads(listed.stdout)["runs"][0]["id"]
    return run_id


def test_schedule_preview_lists_fire_times_in_the_zone(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    shown = cli_mesh.jobmesh(tmp_path, "schedule", "preview", "30 2 * * *", "--tz", "Europe/Berlin", "-n", "3")
    assert shown.returncode == 0, shown.stderr
    assert len(re.findall(r"\d{4}-\d\d-\d\d 02:30:00", shown.stdout)) == 3


def test_users_are_managed_by_admins_only(cli_mesh: CliMesh, tmp_path: Path) -> None:
    email = f"bob-{uuid.uuid4().hex[:8]}@example.com"
    with SyncClient.connect(cli_mesh.server) as c:
        c.auth.sign_up(email.partition("@")[0], email, PASSWORD)
    user_config, admin_config = tmp_path / "user", tmp_path / "admin"
    cli_mesh.login(user_config, email)
    refused = cli_mesh.jobmesh(user_config, "users", "list")
    assert refused.returncode == 4, refused.stderr

    cli_mesh.login(admin_config, ADMIN_EMAIL)
    listed = cli_mesh.jobmesh(admin_config, "users", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert email in [u["email"] for u in json.loads(listed.stdout)["users"]]
    viewer = cli_mesh.jobmesh(admin_config, "users", "set-role", email, "viewer", "-o", "json")
    assert json.loads(viewer.stdout)["role"] == "ROLE_VIEWER"
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    as_viewer = cli_mesh.jobmesh(user_config, "jobs", "create", "--script", str(script), "--cron", "0 2 * * *")
    assert as_viewer.returncode == 4, as_viewer.stderr

    disabled = cli_mesh.jobmesh(admin_config, "users", "disable", email, "-o", "json")
    assert json.loads(disabled.stdout)["disabled"] is True
    assert cli_mesh.jobmesh(user_config, "jobs", "list").returncode == 4
    enabled = cli_mesh.jobmesh(admin_config, "users", "enable", email)
    assert enabled.returncode == 0, enabled.stderr
    cli_mesh.login(user_config, email)
    assert cli_mesh.jobmesh(user_config, "jobs", "list").returncode == 0


def test_the_readme_python_example_runs(cli_mesh: CliMesh, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From the terminal and from Python", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    example = tmp_path / "example.py"
    example.write_text(code)
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=ROOT,
        env=cli_mesh.env(tmp_path, JOBMESH_EMAIL=cli_mesh.user_email, JOBMESH_PASSWORD=PASSWORD),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "hello from jobmesh" in done.stdout
    assert f"run {RunStatus.SUCCEEDED}, exit code 0" in done.stdout


def test_update_changes_the_given_fields_and_a_stale_version_conflicts(cli_mesh: CliMesh, tmp_path: Path) -> None:
    cli_mesh.login(tmp_path)
    script = tmp_path / "report.py"
    script.write_text("print('report')\n")
    created = cli_mesh.jobmesh(tmp_path, "jobs", "create", "--script", str(script), "--cron", "0 2 * * *", "-o", "json")
    job = json.loads(created.stdout)
    updated = cli_mesh.jobmesh(tmp_path, "jobs", "update", job["id"], "--cron", "30 3 * * *", "-o", "json")
    assert updated.returncode == 0, updated.stderr
    after = json.loads(updated.stdout)
    assert after["cronExpr"] == "30 3 * * *" and after["version"] == job["version"] + 1
    assert after["scriptContent"] == "print('report')\n"

    session = SyncClient.login(cli_mesh.server, cli_mesh.user_email, PASSWORD)
    with SyncClient.connect(cli_mesh.server, token=session.access_token) as c:
        stale = c.jobs.get(job["id"])
        c.jobs.pause(job["id"])
        with pytest.raises(errors.Conflict):
            c.jobs.update(replace(stale, name="renamed"), ["name"])


def test_the_sync_client_speaks_domain_types_and_raises_field_violations(cli_mesh: CliMesh) -> None:
    session = SyncClient.login(cli_mesh.server, cli_mesh.user_email, PASSWORD)
    assert session.user.email == cli_mesh.user_email and session.refresh_token
    with SyncClient.connect(cli_mesh.server, token=session.access_token) as c:
        with pytest.raises(errors.InvalidArgument) as refused:
            c.jobs.create(Job(name="bad", job_type=JobType.RECURRING, cron_expr="0 2 * *", script_content="pass"))
        assert [v.field for v in refused.value.violations] == ["job.cron_expr"]

        job = c.jobs.create(
            Job(name="sync", job_type=JobType.RECURRING, cron_expr="0 0 1 1 *", script_content="print(7)")
        )
        assert job.id and job.state is JobState.ACTIVE and job.next_fire_time is not None
        assert job.id in [j.id for j in c.jobs.list(name_contains="sync").items]
        run = c.jobs.run_now(job.id)
        events = list(c.watch_run(run.id))
        assert [e.data for e in events if isinstance(e, OutputChunk)] == ["7\n"]
        last = events[-1]
        assert isinstance(last, Run) and last.status is RunStatus.SUCCEEDED
        assert c.runs.logs(run.id).stdout == "7\n"
        with pytest.raises(errors.NotFound):
            c.runs.get(str(uuid.uuid4()))


async def test_calls_refused_together_renew_the_session_once(cli_mesh: CliMesh) -> None:
    session = await Client.login(cli_mesh.server, cli_mesh.user_email, PASSWORD)
    renewed: list[Session] = []
    async with Client.connect(
        cli_mesh.server, token="expired", refresh_token=session.refresh_token, on_refresh=renewed.append
    ) as c:
        pages = await asyncio.gather(*(c.jobs.list() for _ in range(5)))
        assert len(pages) == 5
        assert len(renewed) == 1 and c.token == renewed[0].access_token != session.access_token
        assert c.refresh_token == renewed[0].refresh_token

"""The Python client's translation of gRPC statuses back to the project's errors, its
retries, and the CLI's exit codes and credentials file."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from core import errors
from core.auth import Role
from core.domain import Run, RunStatus, RunTrigger, Session, User
from core.rpc import ERROR_TABLE, to_grpc_status
from jobmesh_client import Backoff, error_from_rpc, error_from_status, with_retries
from launcher.user_cli._credentials import Credentials, CredentialStore, config_dir
from launcher.user_cli._exit import EXIT_CODE_OF, exit_code_of, exit_code_of_run

EXAMPLES: list[errors.JobmeshError] = [
    errors.InvalidArgument(
        [
            errors.FieldViolation("job.cron_expr", "minute 61 is out of range 0-59"),
            errors.FieldViolation("job.timezone", "unknown time zone"),
        ]
    ),
    errors.NotFound("job 42 not found"),
    errors.AlreadyExists("email taken"),
    errors.FailedPrecondition("the run has ended"),
    errors.Conflict("version 3 is stale", reason="VERSION_MISMATCH"),
    errors.Unauthenticated("token expired", reason="TOKEN_EXPIRED"),
    errors.PermissionDenied("viewers change nothing"),
    errors.ResourceExhausted("too many attempts"),
    errors.Unavailable("database down"),
    errors.Unimplemented("not yet"),
]


@pytest.mark.parametrize("sent", EXAMPLES, ids=lambda e: type(e).__name__)
def test_a_status_comes_back_as_the_error_the_server_raised(sent: errors.JobmeshError) -> None:
    status = to_grpc_status(sent)
    got = error_from_status(status.code, status.details, status.trailing_metadata)
    assert type(got) is type(sent)
    assert got.message == sent.message
    assert got.reason == sent.reason
    if isinstance(sent, errors.InvalidArgument):
        assert isinstance(got, errors.InvalidArgument)
        assert got.violations == sent.violations


def test_every_error_of_the_table_is_covered() -> None:
    assert {type(e) for e in EXAMPLES} | {errors.Internal} == set(ERROR_TABLE)


def test_a_raised_rpc_error_is_translated_with_its_field_violations() -> None:
    status = to_grpc_status(errors.InvalidArgument(errors.FieldViolation("job.cron_expr", "bad minute")))
    raised = grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), details=status.details
    )
    got = error_from_rpc(raised)
    assert isinstance(got, errors.InvalidArgument)
    assert got.violations == [errors.FieldViolation("job.cron_expr", "bad minute")]
    assert str(got) == "job.cron_expr: bad minute"


def test_statuses_without_details_map_by_code() -> None:
    assert isinstance(error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused", None), errors.Unavailable)
    assert isinstance(error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", ()), errors.Unavailable)
    unknown = error_from_status(grpc.StatusCode.UNKNOWN, "boom", None)
    assert isinstance(unknown, errors.Internal) and unknown.message == "boom"
    bare = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad request", None)
    assert isinstance(bare, errors.InvalidArgument) and bare.violations == [] and bare.message == "bad request"


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    backoff = Backoff(attempts=6, initial_delay=0.5, max_delay=3.0, multiplier=2.0)
    assert list(backoff.delays(lambda: 1.0)) == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert list(backoff.delays(lambda: 0.5)) == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert list(Backoff(attempts=1).delays()) == []


class Flaky:
    def __init__(self, failures: list[errors.JobmeshError]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "answer"


async def test_unavailable_is_retried_after_waits() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    call = Flaky([errors.Unavailable("down"), errors.Unavailable("down")])
    assert await with_retries(call, Backoff(attempts=5, initial_delay=1.0, max_delay=10.0), sleep) == "answer"
    assert call.calls == 3
    assert len(waits) == 2 and 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 2.0


async def test_retries_stop_after_the_last_attempt() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    call = Flaky([errors.Unavailable(str(n)) for n in range(10)])
    with pytest.raises(errors.Unavailable, match=r"^2$"):
        await with_retries(call, Backoff(attempts=3), sleep)
    assert call.calls == 3 and len(waits) == 2


async def test_other_errors_are_not_retried() -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("no wait expected")

    call = Flaky([errors.InvalidArgument(errors.FieldViolation("job.name", "too long"))])
    with pytest.raises(errors.InvalidArgument):
        await with_retries(call, Backoff(), sleep)
    assert call.calls == 1


def test_each_error_has_an_exit_code() -> None:
    assert set(EXIT_CODE_OF) == set(ERROR_TABLE)
    assert exit_code_of(errors.InvalidArgument([])) == 2
    assert exit_code_of(errors.NotFound("x")) == 3
    assert exit_code_of(errors.PermissionDenied("x")) == exit_code_of(errors.Unauthenticated("x")) == 4
    assert exit_code_of(errors.Unavailable("x")) == 5


def _run(status: RunStatus, exit_code: int = 0) -> Run:
    now = datetime.now(UTC)
    return Run("r", "j", 1, status, RunTrigger.MANUAL, now, now, exit_code=exit_code)


def test_a_followed_run_gives_its_own_exit_code() -> None:
    assert exit_code_of_run(_run(RunStatus.SUCCEEDED)) == 0
    assert exit_code_of_run(_run(RunStatus.FAILED, 3)) == 3
    assert exit_code_of_run(_run(RunStatus.FAILED, -9)) == 137
    assert exit_code_of_run(_run(RunStatus.FAILED, 0)) == 1
    assert exit_code_of_run(_run(RunStatus.TIMED_OUT)) == 1
    assert exit_code_of_run(_run(RunStatus.CANCELLED)) == 1


def test_the_credentials_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    store = CredentialStore(config_dir({"XDG_CONFIG_HOME": str(tmp_path)}))
    user = User("u1", "ada", "ada@example.com", Role.USER, "", datetime.now(UTC))
    old = os.umask(0)
    try:
        store.save("a:1", Credentials.of(Session("access", "refresh", user, 3600)))
        store.save("b:2", Credentials("other", "other-refresh"))
    finally:
        os.umask(old)
    assert store.path == tmp_path / "jobmesh" / "credentials.json"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.load("a:1") == Credentials("access", "refresh", "u1", "ada@example.com", "USER")
    assert set(json.loads(store.path.read_text())["servers"]) == {"a:1", "b:2"}
    assert store.forget("a:1") and store.load("a:1") is None and store.load("b:2") is not None


def test_the_config_directory_follows_the_environment(tmp_path: Path) -> None:
    assert config_dir({"JOBMESH_CONFIG_DIR": str(tmp_path)}) == tmp_path
    assert config_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/jobmesh")
    assert config_dir({}) == Path.home() / ".config" / "jobmesh"


def test_a_wrong_command_line_exits_2_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    from launcher.user_cli import run_cli

    assert run_cli(["jobs", "no-such-command"]) == 2
    assert run_cli(["jobs", "create", "--cron", "0 2 * * *"]) == 2
    assert "error: --script: is required" in capsys.readouterr().err


async def test_a_server_that_does_not_answer_is_retried_then_unavailable() -> None:
    from core.domain import Job, JobType
    from jobmesh_client import Client
    from tests.support.processes import free_port

    backoff = Backoff(attempts=3, initial_delay=0.01, max_delay=0.02)
    async with Client.connect(f"127.0.0.1:{free_port()}", backoff=backoff, timeout=5) as c:
        with pytest.raises(errors.Unavailable):
            await c.jobs.create(Job(name="x", job_type=JobType.RECURRING, cron_expr="0 2 * * *"))

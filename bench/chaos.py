"""Chaos: a mixed load through 2 schedulers and 3 sandboxed workers on a private MariaDB
and a private Redis, while processes, stores and the network fail; then the invariants.

Load (every run's script sends "<job tag> <nonce>" over UDP to a collector of this
suite, then prints the nonce, which lands in the run's captured output): every-second
recurring jobs (``* * * * * *``), one-time jobs spread over the window, run-now calls,
jobs that fail at random and retry, jobs that time out and retry.

Faults, several of each, spread over the window: ``kill -9`` of a scheduler (restarted),
of a worker mid-run (restarted under a new id), of a worker's fork server; Redis
restarted (empty: no persistence) and FLUSHALL; MariaDB ``kill -9`` and restarted;
a worker cut off from Redis and MariaDB for 30 s (it runs in its own network namespace
joined to the host by a veth pair; the stores listen on the host end's address; the link
goes down, then up).

Checks, after the mesh drained: no lost run (every slot of the window has a terminal run
or a SKIPPED row; no run left PENDING/QUEUED/RUNNING), no attempt executed twice, no
result of a superseded attempt recorded, every run RUNNING on a killed worker ended LOST
and was retried. Prints one JSON object (with the evidence of what broke, if anything did:
run ids, rows, and what the processes logged of them); exits 1 if an invariant broke.

    .venv/bin/python -m bench.chaos [--runs 10000] [--seconds 480]

Needs root (network namespace, the workers' sandbox), mariadb-install-db, mariadbd and
redis-server. Everything it starts lives under one temp directory and is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from bench.common import ROOT, free_port
from db.engine import Database
from gen.jobmesh.v1 import auth_pb2, auth_pb2_grpc, job_pb2, job_pb2_grpc

NETNS = f"jmchaos{os.getpid() % 10000}"
VETH_HOST, VETH_NS = f"jmch{os.getpid() % 10000}", f"jmcn{os.getpid() % 10000}"
OCTET = 100 + os.getpid() % 100
HOST_ADDR, NS_ADDR = f"10.231.{OCTET}.1", f"10.231.{OCTET}.2"
UNFINISHED = ("PENDING", "QUEUED", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST", "SKIPPED")
EXECUTED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "LOST")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def now() -> datetime:
    return datetime.now(UTC)


def stamp(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


# --- the side-effect collector ---------------------------------------------------


@dataclass
class Collector:
    """UDP listener: one datagram "<tag> <nonce>" per script execution."""

    sock: socket.socket
    reports: list[tuple[float, str, str]] = field(default_factory=list)
    malformed: int = 0

    @classmethod
    def open(cls, host: str) -> Collector:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind((host, 0))
        collector = cls(sock)
        threading.Thread(target=collector._loop, daemon=True).start()
        return collector

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(512)
            except OSError:
                return
            parts = data.decode(errors="replace").split()
            if len(parts) == 2:
                self.reports.append((time.time(), parts[0], parts[1]))
            else:
                self.malformed += 1


def script(tag: str, host: str, port: int, body: str) -> str:
    """A run's script: report this execution (retrying through a network cut), print
    the nonce (it lands in the run's output), then ``body``."""
    return "\n".join(
        [
            "import random, socket, sys, time, uuid",
            "nonce = uuid.uuid4().hex",
            "deadline = time.monotonic() + 90",
            "while True:",
            "    try:",
            "        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
            f"        s.sendto(f'{tag} {{nonce}}'.encode(), ({host!r}, {port}))",
            "        s.close()",
            "        break",
            "    except OSError:",
            "        if time.monotonic() > deadline:",
            "            raise",
            "        time.sleep(0.5)",
            "print('chaos-nonce', nonce, flush=True)",
            body,
        ]
    )


# --- the private stores and the network namespace ----------------------------------


class Network:
    def up(self) -> None:
        self.down()
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        sh("ip", "link", "set", VETH_NS, "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_ADDR}/24", "dev", VETH_HOST)
        sh("ip", "link", "set", VETH_HOST, "up")
        for cmd in (
            ("ip", "addr", "add", f"{NS_ADDR}/24", "dev", VETH_NS),
            ("ip", "link", "set", VETH_NS, "up"),
            ("ip", "link", "set", "lo", "up"),
        ):
            sh("ip", "netns", "exec", NETNS, *cmd)

    def cut(self, down: bool) -> None:
        sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "down" if down else "up")

    def down(self) -> None:
        sh("ip", "link", "del", VETH_HOST, check=False)
        sh("ip", "netns", "del", NETNS, check=False)


@dataclass
class MariaDB:
    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.base / "mariadb"

    @property
    def socket(self) -> Path:
        return self.base / "mariadb.sock"

    def install(self) -> None:
        sh(
            "mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
            "--auth-root-authentication-method=normal", "--skip-test-db",
        )  # fmt: skip

    def start(self) -> None:
        log = (self.base / "mariadb.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                f"--socket={self.socket}", f"--bind-address={HOST_ADDR}", "--user=root", "--skip-grant-tables",
                "--skip-name-resolve", "--innodb-buffer-pool-size=256M", "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=500", f"--pid-file={self.base / 'mariadb.pid'}",
                f"--log-error={self.base / 'mariadb.err'}",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.sql("SELECT 1", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited: " + (self.base / "mariadb.err").read_text()[-2000:])
            time.sleep(0.2)
        raise RuntimeError("mariadbd did not answer")

    def sql(self, statement: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", statement, check=check)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class Redis:
    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST_ADDR}:{self.port}/0"

    def start(self) -> None:
        log = (self.base / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST_ADDR, "--save", "", "--appendonly", "no",
             "--dir", str(self.base), "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=1)
                client.ping()
                client.close()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not answer")

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        client.flushall()
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- the mesh ---------------------------------------------------------------------


@dataclass
class Member:
    name: str
    kind: str  # scheduler | worker
    env: dict[str, str]
    netns: bool = False
    incarnation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ids: list[str] = field(default_factory=list)  # worker ids of every incarnation

    def start(self, base: Path) -> None:
        self.incarnation += 1
        env = dict(self.env)
        if self.kind == "worker":
            worker_id = f"{self.name}-{self.incarnation}"
            env["JOBMESH_WORKER_ID"] = worker_id
            self.ids.append(worker_id)
        console = "jobmesh-scheduler" if self.kind == "scheduler" else "jobmesh-worker"
        command = [str(Path(sys.executable).parent / console)]
        if self.netns:
            command = ["ip", "netns", "exec", NETNS, *command]
        log_path = base / f"{self.name}-{self.incarnation}.log"
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if " ready " in log_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n" + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready:\n" + log_path.read_text(errors="replace")[-3000:])

    @property
    def worker_id(self) -> str:
        return self.ids[-1] if self.ids else ""

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def fork_server(self) -> int | None:
        assert self.proc is not None
        pid = self.proc.pid
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"_forkserver" in cmdline:
                    return int(child)
        return None


def mesh_env(database_url: str, redis_url: str, kind: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    env.update(
        JOBMESH_DATABASE_URL=database_url,
        JOBMESH_REDIS_URL=redis_url,
        JOBMESH_LOG_LEVEL="WARNING",
        JOBMESH_SHUTDOWN_GRACE_SECONDS="2",
        JOBMESH_WORKER_HEARTBEAT_SECONDS="0.5",
        JOBMESH_WORKER_HEARTBEAT_TTL_SECONDS="5",
        JOBMESH_REQUEUE_AFTER_SECONDS="5",
        JOBMESH_DB_POOL_SIZE="5",
        PYTHONUNBUFFERED="1",
    )
    if kind == "scheduler":
        env.update(JOBMESH_JWT_SECRET="chaos-secret-" + "c" * 32, JOBMESH_SCHEDULER_METRICS_PORT="0")
    env.update(extra)
    return env


# --- database reads ----------------------------------------------------------------


async def _query(url: str, statement: str) -> list[tuple[Any, ...]]:
    db = Database.from_url(url, 1)
    try:
        async with db.transaction() as conn:
            return [tuple(r) for r in (await conn.execute(text(statement))).all()]
    finally:
        await db.close()


def query(url: str, statement: str, attempts: int = 1) -> list[tuple[Any, ...]]:
    for i in range(attempts):
        try:
            return asyncio.run(_query(url, statement))
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(1)
    return []


def naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


# --- the suite ----------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float
    target: str = ""
    repaired_at: float = 0.0
    first_finish_after_fault_s: float | None = None  # a run finished again (anywhere)
    first_finish_after_repair_s: float | None = None  # ... once the fault was repaired
    running_on_victim: list[tuple[str, int]] = field(default_factory=list)
    victim_outcome: dict[str, int] = field(default_factory=dict)  # status of those runs' first attempt
    victim_runs_done_s: float | None = None  # until the last of them had a terminal last attempt


@dataclass
class Load:
    tags: dict[str, str] = field(default_factory=dict)  # tag -> job id
    kinds: dict[str, str] = field(default_factory=dict)  # job id -> kind
    max_attempts: dict[str, int] = field(default_factory=dict)
    every_second: list[str] = field(default_factory=list)
    run_now: list[str] = field(default_factory=list)  # run ids returned by RunJobNow


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="jobmesh-chaos-"))
        os.chmod(self.base, 0o755)
        self.net = Network()
        self.mariadb = MariaDB(self.base)
        self.redis = Redis(self.base)
        self.members: list[Member] = []
        self.faults: list[Fault] = []
        self.load = Load()
        self.url = ""
        self.load_samples: list[float] = []
        self.turns: Counter[str] = Counter()

    # set-up
    def start(self) -> None:
        self.net.up()
        self.mariadb.install()
        self.mariadb.start()
        self.mariadb.sql("CREATE DATABASE jobmesh")
        self.url = f"mysql+asyncmy://root@{HOST_ADDR}:{self.mariadb.port}/jobmesh"
        subprocess.run(
            [sys.executable, "-c", f"from db import migrate; migrate.upgrade({self.url!r})"], cwd=ROOT, check=True
        )
        self.redis.start()
        self.collector = Collector.open(HOST_ADDR)
        for i in range(2):
            port = free_port()
            env = mesh_env(self.url, self.redis.url, "scheduler", JOBMESH_SCHEDULER_PORT=str(port))
            self.members.append(Member(f"scheduler{i + 1}", "scheduler", env))
        for i in range(3):
            env = mesh_env(
                self.url, self.redis.url, "worker",
                JOBMESH_WORKER_SLOTS=str(self.args.slots), JOBMESH_WORKER_ALLOW_HOST_NETWORK="true",
                JOBMESH_WORKER_SANDBOX=self.args.sandbox,
            )  # fmt: skip
            self.members.append(Member(f"worker{i + 1}", "worker", env, netns=(i == 2)))
        for member in self.members:
            member.start(self.base)
        address = "127.0.0.1:" + self.members[0].env["JOBMESH_SCHEDULER_PORT"]
        self.channel = grpc.insecure_channel(address)
        auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        resp = auth.SignUp(
            auth_pb2.SignUpRequest(username="chaos", email="chaos@example.com", password="correct horse battery")
        )
        self.md = (("authorization", f"Bearer {resp.access_token}"),)
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        self.redis.stop()
        self.mariadb.stop()
        self.net.down()
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    # load
    def create(self, kind: str, job: job_pb2.Job, max_attempts: int) -> str:
        tag = uuid.uuid4().hex[:16]
        job.script_content = script(tag, HOST_ADDR, self.collector.port, job.script_content)
        job.network = job_pb2.NETWORK_HOST
        job.retry_policy.CopyFrom(
            job_pb2.RetryPolicy(
                max_attempts=max_attempts, strategy=job_pb2.RETRY_STRATEGY_FIXED_BACKOFF, initial_delay_seconds=1
            )
        )
        for i in range(30):
            try:
                created = self.jobs.CreateJob(
                    job_pb2.CreateJobRequest(job=job, request_id=tag), metadata=self.md, timeout=20
                )
                break
            except grpc.RpcError:
                if i == 29:
                    raise
                time.sleep(1)
        self.load.tags[tag] = created.id
        self.load.kinds[created.id] = kind
        self.load.max_attempts[created.id] = max_attempts
        return str(created.id)

    def plan(self, t0: datetime) -> None:
        """Jobs whose runs add up to about ``--runs`` within ``--seconds``."""
        seconds = self.args.seconds
        recurring = max(1, math.ceil(self.args.runs * 0.75 / seconds))
        one_time = max(10, self.args.runs - recurring * seconds)
        body_ok = "time.sleep(random.uniform(0.05, 0.6))"
        for i in range(recurring):
            job = job_pb2.Job(
                name=f"every-second-{i}", job_type=job_pb2.JOB_TYPE_RECURRING, cron_expr="* * * * * *",
                script_content=body_ok, timeout_seconds=120,
            )  # fmt: skip
            self.load.every_second.append(self.create("every_second", job, 2))
        rng = random.Random(7)
        for i in range(one_time):
            roll = rng.random()
            if roll < 0.70:
                kind, body, timeout, attempts = "one_time", body_ok, 120, 2
            elif roll < 0.80:
                kind, body, timeout, attempts = "slow", "time.sleep(random.uniform(2, 5))", 120, 2
            elif roll < 0.95:
                kind, body, timeout, attempts = "flaky", "sys.exit(3 if random.random() < 0.5 else 0)", 120, 3
            else:
                kind, body, timeout, attempts = "timeout", "time.sleep(30)", 1, 2
            at = t0 + timedelta(seconds=rng.uniform(0, seconds))
            job = job_pb2.Job(
                name=f"{kind}-{i}", job_type=job_pb2.JOB_TYPE_ONE_TIME, scheduled_at=stamp(at),
                script_content=body, timeout_seconds=timeout,
            )  # fmt: skip
            self.create(kind, job, attempts)

    def run_now(self) -> None:
        job_id = random.choice(self.load.every_second)
        try:
            run = self.jobs.RunJobNow(job_pb2.RunJobNowRequest(id=job_id), metadata=self.md, timeout=10)
            self.load.run_now.append(run.id)
        except grpc.RpcError:
            pass  # its scheduler may be the one just killed

    # faults
    def running_on(self, worker_id: str) -> list[tuple[str, int]]:
        rows = query(self.url, f"SELECT id, attempt FROM job_run WHERE status='RUNNING' AND worker_id='{worker_id}'")
        return [(str(r[0]), int(r[1])) for r in rows]

    def inject(self, kind: str) -> Fault:
        schedulers = [m for m in self.members if m.kind == "scheduler"]
        workers = [m for m in self.members if m.kind == "worker"]
        fault = Fault(kind, time.time())
        self.turns[kind] += 1
        if kind == "scheduler_kill":
            victim = schedulers[self.turns["scheduler_kill"] % len(schedulers)]
            fault.target = victim.name
            fault.at = time.time()
            victim.kill9()
            victim.start(self.base)
        elif kind == "worker_kill":
            victim = workers[self.turns["worker_kill"] % 2]  # the third one is for the network cut
            fault.target = victim.worker_id
            fault.running_on_victim = self.running_on(victim.worker_id)
            fault.at = time.time()
            victim.kill9()
            victim.start(self.base)
        elif kind == "forkserver_kill":
            victim = workers[self.turns["forkserver_kill"] % len(workers)]
            pid = victim.fork_server()
            fault.target = f"{victim.worker_id} fork server pid {pid}"
            fault.running_on_victim = self.running_on(victim.worker_id)
            fault.at = time.time()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        elif kind == "redis_restart":
            self.redis.restart()
        elif kind == "redis_flushall":
            self.redis.flushall()
        elif kind == "mariadb_kill":
            self.mariadb.kill9()
            self.mariadb.start()
        elif kind == "netcut":
            victim = workers[2]
            fault.target = victim.worker_id
            fault.running_on_victim = self.running_on(victim.worker_id)
            fault.at = time.time()
            self.net.cut(True)
            time.sleep(30)
            self.net.cut(False)
        fault.repaired_at = time.time()
        self.faults.append(fault)
        return fault

    def measure_recovery(self, fault: Fault, deadline: float) -> None:
        """Seconds from the fault to the first run finished after it, and to the
        first run finished after its repair (a run's finished_at is its result's write)."""
        for attr, since_ts in (
            ("first_finish_after_fault_s", fault.at),
            ("first_finish_after_repair_s", fault.repaired_at),
        ):
            since = naive(datetime.fromtimestamp(since_ts, UTC))
            while time.time() < deadline:
                try:
                    rows = query(self.url, f"SELECT MIN(finished_at) FROM job_run WHERE finished_at > '{since}'")
                except Exception:
                    rows = [(None,)]
                first = rows[0][0] if rows else None
                if first is not None:
                    setattr(fault, attr, round(first.replace(tzinfo=UTC).timestamp() - fault.at, 3))
                    break
                time.sleep(0.5)

    def sample_load(self) -> None:
        self.load_samples.append(os.getloadavg()[0])

    # the run
    def run(self) -> dict[str, Any]:
        started = time.time()
        self.start()
        setup_s = time.time() - started
        t0 = now() + timedelta(seconds=15 + self.args.runs / 400)
        self.plan(t0)
        created_s = time.time() - started
        window_end = t0 + timedelta(seconds=self.args.seconds)
        kinds = ["scheduler_kill", "worker_kill", "forkserver_kill", "redis_restart", "redis_flushall",
                 "mariadb_kill", "netcut"] * self.args.faults_each  # fmt: skip
        random.Random(11).shuffle(kinds)
        while now() < t0:
            time.sleep(0.2)
        gap = self.args.seconds / (len(kinds) + 1)
        schedule = [t0.timestamp() + gap * (i + 1) for i in range(len(kinds))]
        next_run_now = time.time() + 2
        next_sample = time.time()
        while now() < window_end:
            if schedule and time.time() >= schedule[0]:
                schedule.pop(0)
                fault = self.inject(kinds.pop(0))
                print(f"[chaos] {fault.kind} {fault.target} at {fault.at - t0.timestamp():.1f}s", file=sys.stderr)
                threading.Thread(target=self.measure_recovery, args=(fault, time.time() + 120), daemon=True).start()
            if time.time() >= next_run_now:
                self.run_now()
                next_run_now = time.time() + 2
            if time.time() >= next_sample:
                self.sample_load()
                next_sample = time.time() + 5
            time.sleep(0.1)
        # End of the window: pause the recurring jobs, then let the mesh drain.
        paused_at = now()
        for job_id in self.load.every_second:
            for _attempt in range(20):
                try:
                    self.jobs.PauseJob(job_pb2.PauseJobRequest(id=job_id), metadata=self.md, timeout=10)
                    break
                except grpc.RpcError:
                    time.sleep(1)
        window_s = (paused_at - t0).total_seconds()
        drain_started = time.time()
        drained = False
        while time.time() - drain_started < self.args.drain:
            rows = query(self.url, "SELECT COUNT(*) FROM job_run WHERE status IN ('PENDING','QUEUED','RUNNING')", 5)
            if rows[0][0] == 0:
                time.sleep(3)  # a retry may still be scheduled by the reaper
                rows = query(self.url, "SELECT COUNT(*) FROM job_run WHERE status IN ('PENDING','QUEUED','RUNNING')")
                if rows[0][0] == 0:
                    drained = True
                    break
            self.sample_load()
            time.sleep(2)
        drain_s = time.time() - drain_started
        time.sleep(1)  # the last datagrams
        result = self.check(t0, paused_at)
        result.update(
            command=" ".join(["python -m bench.chaos", *sys.argv[1:]]),
            setup_s=round(setup_s, 1),
            create_jobs_s=round(created_s - setup_s, 1),
            window_s=round(window_s, 1),
            drained=drained,
            drain_s=round(drain_s, 1),
            wall_s=round(time.time() - started, 1),
            load_avg_1m={
                "mean": round(sum(self.load_samples) / max(1, len(self.load_samples)), 2),
                "max": round(max(self.load_samples, default=0.0), 2),
            },
            cpus=os.cpu_count(),
            sandbox=self.args.sandbox,
            faults=[
                {
                    "kind": f.kind,
                    "target": f.target,
                    "at_s": round(f.at - t0.timestamp(), 1),
                    "repaired_after_s": round(f.repaired_at - f.at, 1),
                    "first_finish_after_fault_s": f.first_finish_after_fault_s,
                    "first_finish_after_repair_s": f.first_finish_after_repair_s,
                    "running_on_victim": len(f.running_on_victim),
                    "victim_runs": f.victim_outcome,
                    "victim_runs_done_s": f.victim_runs_done_s,
                }
                for f in self.faults
            ],
        )
        return result

    # the checks
    def check(self, t0: datetime, paused_at: datetime) -> dict[str, Any]:
        runs = query(
            self.url,
            "SELECT r.id, r.job_id, r.scheduled_at, r.attempt, r.status, r.trigger, r.worker_id, r.exit_code,"
            " r.error, r.skip_reason, r.finished_at, o.stdout FROM job_run r"
            " LEFT JOIN run_output o ON o.run_id = r.id",
            5,
        )
        ours = set(self.load.kinds)
        runs = [r for r in runs if r[1] in ours]
        by_id = {r[0]: r for r in runs}
        status = Counter(str(r[4]) for r in runs)
        problems: dict[str, list[Any]] = defaultdict(list)

        # Unfinished runs after the drain, with what the processes' logs say of them.
        logs = [p.read_text(errors="replace").splitlines() for p in sorted(self.base.glob("*.log"))]
        for r in runs:
            if r[4] in UNFINISHED:
                said = [line[:300] for lines in logs for line in lines if r[0] in line][:3]
                problems["unfinished"].append([r[0], r[1], str(r[2]), r[3], r[4], r[6], said])

        # Slots: each (job, slot)'s attempts 1..k exist, the last is terminal, every
        # earlier one is a retryable end (FAILED/TIMED_OUT/LOST), a SKIPPED has a reason.
        slots: dict[tuple[str, datetime], dict[int, tuple[Any, ...]]] = defaultdict(dict)
        for r in runs:
            slots[(r[1], r[2])][int(r[3])] = r
        for (job_id, slot), attempts in slots.items():
            top = max(attempts)
            if sorted(attempts) != list(range(1, top + 1)):
                problems["attempt_gaps"].append([job_id, str(slot), sorted(attempts)])
            for n, r in attempts.items():
                if n < top and r[4] not in ("FAILED", "TIMED_OUT", "LOST"):
                    # A result recorded on an attempt that a newer one superseded.
                    problems["superseded_attempt_has_result"].append([r[0], n, r[4], r[6], top])
                if r[4] == "SKIPPED" and not r[9]:
                    problems["skipped_without_reason"].append([r[0], str(slot)])
            last = attempts[top]
            if last[4] in ("FAILED", "TIMED_OUT", "LOST") and top < self.load.max_attempts[job_id]:
                problems["not_retried"].append([last[0], job_id, str(slot), top, last[4], last[8][:120]])

        # Every second of the window has a slot for each every-second job.
        first_slot = naive(t0)
        last_slot = naive(paused_at) - timedelta(seconds=1)
        missing_slots = 0
        for job_id in self.load.every_second:
            seen = {s for (j, s) in slots if j == job_id}
            if not seen:
                problems["every_second_job_never_ran"].append(job_id)
                continue
            cursor = max(first_slot, min(seen)).replace(microsecond=0)
            while cursor <= last_slot:
                if cursor not in seen:
                    missing_slots += 1
                    if len(problems["missing_slots"]) < 20:
                        problems["missing_slots"].append([job_id, str(cursor)])
                cursor += timedelta(seconds=1)
        # Every one-time job has its slot.
        one_time_jobs = [j for j, k in self.load.kinds.items() if k != "every_second"]
        with_slot = {j for (j, _) in slots}
        for job_id in one_time_jobs:
            if job_id not in with_slot:
                problems["one_time_job_without_run"].append(job_id)
        for run_id in self.load.run_now:
            if run_id not in by_id:
                problems["run_now_without_row"].append(run_id)

        # Side effects: the scripts' reports against the runs' recorded output.
        reports = self.collector.reports
        nonce_of_run: dict[str, str] = {}
        for r in runs:
            stdout = r[11] or ""
            for line in stdout.splitlines():
                if line.startswith("chaos-nonce "):
                    nonce_of_run[r[0]] = line.split()[1]
        run_of_nonce: dict[str, list[str]] = defaultdict(list)
        for run_id, nonce in nonce_of_run.items():
            run_of_nonce[nonce].append(run_id)
        reported = Counter(n for (_, _, n) in reports)
        reported_job = {n: self.load.tags.get(tag, "?") for (_, tag, n) in reports}
        for nonce, run_ids in run_of_nonce.items():
            if len(run_ids) > 1:
                problems["one_execution_recorded_on_several_runs"].append([nonce, run_ids])
        for nonce, count in reported.items():
            if count > 1:
                problems["nonce_reported_twice"].append([nonce, count])
        for run_id, nonce in nonce_of_run.items():
            r = by_id[run_id]
            if nonce not in reported:
                problems["recorded_output_without_execution"].append([run_id, r[3], r[4], nonce])
            elif reported_job[nonce] != r[1]:
                problems["recorded_output_of_another_job"].append([run_id, nonce, reported_job[nonce]])
        # Executions per job against the attempts that could have executed: an attempt
        # executed twice shows as more reports than such attempts, or (where its output
        # was recorded) as a report whose nonce no run holds beyond what LOST/failed
        # attempts without recorded output account for.
        executions: Counter[str] = Counter(reported_job.values())
        executable: Counter[str] = Counter(r[1] for r in runs if r[4] in EXECUTED)
        without_nonce: Counter[str] = Counter(r[1] for r in runs if r[4] in EXECUTED and r[0] not in nonce_of_run)
        orphans: Counter[str] = Counter(reported_job[n] for n in reported if n not in run_of_nonce)
        for job_id, n in executions.items():
            if n > executable[job_id]:
                problems["more_executions_than_attempts"].append([job_id, n, executable[job_id]])
            if orphans[job_id] > without_nonce[job_id]:
                problems["unrecorded_executions_beyond_unrecorded_attempts"].append(
                    [job_id, orphans[job_id], without_nonce[job_id]]
                )
        # A finished run that succeeded must carry its execution's nonce.
        succeeded_without_nonce = [r[0] for r in runs if r[4] == "SUCCEEDED" and r[0] not in nonce_of_run]
        if succeeded_without_nonce:
            problems["succeeded_without_its_output"] = succeeded_without_nonce[:20]

        # Runs RUNNING on a killed worker: LOST (unless their result was written
        # before the kill) and retried.
        killed_running = 0
        for fault in self.faults:
            outcome: Counter[str] = Counter()
            done: list[float] = []
            for run_id, attempt in fault.running_on_victim:
                found = by_id.get(run_id)
                if found is None:
                    problems["killed_run_missing"].append(run_id)
                    continue
                r = found
                outcome[str(r[4])] += 1
                attempts = slots[(r[1], r[2])]
                final = attempts[max(attempts)]
                if final[10] is not None:
                    done.append(final[10].replace(tzinfo=UTC).timestamp() - fault.at)
                if fault.kind == "forkserver_kill":
                    continue  # its runs fail ("the fork server exited") and retry: checked with every slot
                killed_running += 1
                finished_before = r[10] is not None and r[10].replace(tzinfo=UTC).timestamp() <= fault.at + 0.5
                if r[4] != "LOST" and not (r[4] in TERMINAL and finished_before):
                    problems["killed_run_not_lost"].append([run_id, attempt, r[4], r[6], str(r[10])])
                if r[4] == "LOST":
                    nxt = slots[(r[1], r[2])].get(attempt + 1)
                    if attempt < self.load.max_attempts[r[1]] and nxt is None:
                        problems["killed_run_not_retried"].append([run_id, attempt])
            fault.victim_outcome = dict(outcome)
            fault.victim_runs_done_s = round(max(done), 2) if done else None
        lost_rows = [r for r in runs if r[4] == "LOST"]
        killed_ids = {f.target for f in self.faults if f.kind in ("worker_kill", "netcut")}
        lost_elsewhere = [[r[0], r[3], r[6], r[8][:100]] for r in lost_rows if r[6] not in killed_ids]

        counts = {
            "runs": len(runs),
            "executions_reported": len(reports),
            "malformed_reports": self.collector.malformed,
            "jobs": len(self.load.kinds),
            "jobs_by_kind": dict(Counter(self.load.kinds.values())),
            "slots": len(slots),
            "run_now_calls": len(self.load.run_now),
            "runs_by_status": dict(status),
            "runs_by_trigger": dict(Counter(str(r[5]) for r in runs)),
            "skip_reasons": dict(Counter(str(r[9]) for r in runs if r[4] == "SKIPPED")),
            "runs_running_on_killed_workers": killed_running,
            "lost_runs_not_on_a_killed_worker": len(lost_elsewhere),
        }
        invariants = {
            "lost_runs": len(problems["unfinished"]) + missing_slots + len(problems["one_time_job_without_run"])
            + len(problems["run_now_without_row"]) + len(problems["not_retried"]) + len(problems["attempt_gaps"]),
            "duplicate_executions": len(problems["nonce_reported_twice"])
            + len(problems["one_execution_recorded_on_several_runs"])
            + len(problems["more_executions_than_attempts"])
            + len(problems["unrecorded_executions_beyond_unrecorded_attempts"]),
            "results_overwritten": len(problems["superseded_attempt_has_result"])
            + len(problems["recorded_output_without_execution"])
            + len(problems["recorded_output_of_another_job"]),
            "killed_runs_not_lost_or_not_retried": len(problems["killed_run_not_lost"])
            + len(problems["killed_run_not_retried"]) + len(problems["killed_run_missing"]),
        }  # fmt: skip
        evidence = {k: v[:20] for k, v in problems.items() if v}
        if lost_elsewhere:
            evidence["lost_not_on_a_killed_worker(info)"] = lost_elsewhere[:20]
        return {"invariants": invariants, "counts": counts, "evidence": evidence}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10000, help="runs to aim for (about)")
    parser.add_argument("--seconds", type=int, default=480, help="the window the load and the faults span")
    parser.add_argument("--faults-each", type=int, default=2, help="injections of each fault kind")
    parser.add_argument("--slots", type=int, default=4, help="slots per worker")
    parser.add_argument("--drain", type=int, default=150, help="seconds allowed for the mesh to drain")
    parser.add_argument("--sandbox", choices=("on", "off"), default="on")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, datadir)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.chaos needs root (a network namespace, the workers' sandbox)")
    chaos = Chaos(args)
    try:
        result = chaos.run()
    finally:
        chaos.stop()
    print(json.dumps(result, indent=1, default=str))
    if any(result["invariants"].values()):
        sys.exit(1)  # an invariant broke: the evidence is in the JSON


if __name__ == "__main__":
    main()

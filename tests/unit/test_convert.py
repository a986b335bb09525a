"""core.convert: every enum value mapped both ways, unknown numbers refused, and each
message kind read back as the domain value it was written from."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core import convert
from core.auth import Role
from core.convert import EnumTable
from core.domain import (
    Component,
    Figures,
    HealthReport,
    HealthStatus,
    Job,
    JobState,
    JobType,
    LogStream,
    MisfirePolicy,
    Network,
    OutputChunk,
    OverlapPolicy,
    PreviewSlot,
    RetryPolicy,
    RetryStrategy,
    Run,
    RunOutput,
    RunStatus,
    RunTrigger,
    Session,
    User,
)
from core.errors import FieldViolation, InvalidArgument
from core.paging import Page
from gen.jobmesh.v1 import auth_pb2, health_pb2, job_pb2, run_pb2

NOW = datetime(2026, 11, 27, 12, 30, 15, 250001, tzinfo=UTC)
TABLES: list[EnumTable[Any, Any]] = [v for v in vars(convert).values() if isinstance(v, EnumTable)]


def violation(call: Any, *args: Any, **kwargs: Any) -> FieldViolation:
    with pytest.raises(InvalidArgument) as caught:
        call(*args, **kwargs)
    [only] = caught.value.violations
    return only


# Enums -----------------------------------------------------------------------------


def test_every_proto_enum_has_its_table() -> None:
    proto_enums = {
        e.full_name
        for module in (auth_pb2, health_pb2, job_pb2, run_pb2)
        for e in module.DESCRIPTOR.enum_types_by_name.values()
    }
    assert {t.descriptor.full_name for t in TABLES} == proto_enums
    assert len(TABLES) == len(proto_enums) == 11


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.domain.__name__)
def test_every_value_is_mapped_both_ways_to_its_namesake(table: EnumTable[Any, Any]) -> None:
    prefix = table.descriptor.values_by_number[0].name.removesuffix("UNSPECIFIED")
    for member in table.domain:
        number = table.to_proto(member)
        assert table.descriptor.values_by_number[number].name == prefix + member.name
        assert table.from_proto(number, "f") is member
    for value in table.descriptor.values:
        if value.number:
            assert table.to_proto(table.from_proto(value.number, "f")) == value.number
    assert table.to_proto(None) == 0 and table.from_proto(0, "f") is None


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.domain.__name__)
def test_an_unknown_number_is_refused_with_its_field(table: EnumTable[Any, Any]) -> None:
    names = ", ".join(v.name for v in table.descriptor.values)
    for number in (-1, len(table.descriptor.values), 2**31 - 1):
        assert violation(table.from_proto, number, "job.x") == FieldViolation(
            "job.x", f"has no value {number}; use one of {names}"
        )
        assert violation(table.required, number, "job.x").field == "job.x"
    assert violation(table.required, 0, "run.status") == FieldViolation("run.status", "is required")


def test_a_table_that_leaves_a_value_out_fails_when_built() -> None:
    with pytest.raises(TypeError):
        EnumTable(JobType, job_pb2.JobType, {JobType.ONE_TIME: job_pb2.JOB_TYPE_ONE_TIME})
    with pytest.raises(TypeError):  # two members on one number: a proto value has none
        EnumTable(Network, job_pb2.Network, {Network.NONE: job_pb2.NETWORK_NONE, Network.HOST: job_pb2.NETWORK_NONE})
    with pytest.raises(TypeError):  # the proto's UNSPECIFIED stands for None, not a member
        EnumTable(
            Network, job_pb2.Network, {Network.NONE: job_pb2.NETWORK_UNSPECIFIED, Network.HOST: job_pb2.NETWORK_HOST}
        )


# Timestamps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        NOW,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 7, 1, 14, 0, 0, 5, tzinfo=ZoneInfo("Europe/Paris")),
    ],
)
def test_timestamps_round_trip_exactly(moment: datetime) -> None:
    stamp = convert.timestamp_to_proto(moment)
    assert stamp is not None
    back = convert.timestamp_from_proto(stamp)
    assert back == moment and back.tzinfo is UTC


def test_an_unset_timestamp_is_none() -> None:
    assert convert.timestamp_to_proto(None) is None
    assert convert.optional_timestamp(job_pb2.Job(), "scheduled_at") is None
    assert (
        convert.optional_timestamp(job_pb2.PreviewScheduleRequest(after=convert.timestamp_to_proto(NOW)), "after")
        == NOW
    )


# Jobs ------------------------------------------------------------------------------

POLICIES = [
    RetryPolicy(),
    RetryPolicy(5, RetryStrategy.EXPONENTIAL_BACKOFF, 10, 600, 3.5),
    RetryPolicy(100, RetryStrategy.EXPONENTIAL_BACKOFF, 86400, 86400, 10.0),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_retry_policies_round_trip(policy: RetryPolicy) -> None:
    assert convert.retry_policy_from_proto(convert.retry_policy_to_proto(policy)) == policy


def test_a_retry_policys_zero_values_take_their_defaults() -> None:
    assert convert.retry_policy_from_proto(job_pb2.RetryPolicy()) == RetryPolicy()
    fixed = job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED_BACKOFF, initial_delay_seconds=30)
    assert convert.retry_policy_from_proto(fixed) == RetryPolicy(
        strategy=RetryStrategy.FIXED_BACKOFF, initial_delay_seconds=30
    )
    assert convert.retry_policy_to_proto(convert.retry_policy_from_proto(fixed)).multiplier == 2.0


STRAY = FieldViolation("job.retry_policy.multiplier", "applies only to RETRY_STRATEGY_EXPONENTIAL_BACKOFF")


@pytest.mark.parametrize("strategy", [job_pb2.RETRY_STRATEGY_FIXED_BACKOFF, job_pb2.RETRY_STRATEGY_LINEAR_BACKOFF])
@pytest.mark.parametrize("multiplier", [2.0, 0.5, -1.0, float("nan"), float("inf")])
def test_a_multiplier_sent_for_a_strategy_without_one_is_refused(strategy: int, multiplier: float) -> None:
    policy = job_pb2.RetryPolicy(strategy=strategy, multiplier=multiplier)  # type: ignore[arg-type]
    assert violation(convert.retry_policy_from_proto, policy) == STRAY
    assert violation(convert.job_from_proto, job_pb2.Job(retry_policy=policy)) == STRAY


def test_an_out_of_range_multiplier_is_left_to_the_domain_rules() -> None:
    for multiplier in (0.5, 11.0, float("nan")):
        policy = convert.retry_policy_from_proto(job_pb2.RetryPolicy(multiplier=multiplier))
        assert policy.multiplier == multiplier or multiplier != multiplier


JOBS = [
    Job(
        name="nightly report",
        job_type=JobType.RECURRING,
        cron_expr="30 2 * * 1-5",
        timezone="Europe/Berlin",
        script_content="print('hi')\n",
        timeout_seconds=90,
        retry_policy=RetryPolicy(4, RetryStrategy.EXPONENTIAL_BACKOFF, 5, 600, 1.5),
        misfire_policy=MisfirePolicy.RUN_ALL,
        overlap_policy=OverlapPolicy.REPLACE,
        queue="reports",
        max_lateness_seconds=30,
        network=Network.HOST,
    ),
    Job(name="once", job_type=JobType.ONE_TIME, scheduled_at=NOW, script_content="pass"),
    Job(),
]


@pytest.mark.parametrize("job", JOBS, ids=["recurring", "one-time", "empty"])
def test_a_clients_job_round_trips(job: Job) -> None:
    assert convert.job_from_proto(convert.job_to_proto(job)) == job


def test_output_only_fields_are_written_and_dropped_when_read() -> None:
    stored = JOBS[0].with_changes(
        id="j1", owner_id="u1", state=JobState.PAUSED, version=7, create_time=NOW, update_time=NOW, next_fire_time=NOW
    )
    pb = convert.job_to_proto(stored)
    assert (pb.id, pb.owner_id, pb.state, pb.version) == ("j1", "u1", job_pb2.JOB_STATE_PAUSED, 7)
    assert pb.schedule_description and convert.job_to_proto(JOBS[1]).schedule_description == ""
    assert convert.job_from_proto(pb) == JOBS[0]


def test_a_jobs_zero_values_take_their_defaults_and_its_enums_are_checked() -> None:
    assert convert.job_from_proto(job_pb2.Job(cron_expr="  @daily \t")) == Job(cron_expr="@daily")
    for name in ("job_type", "misfire_policy", "overlap_policy", "network"):
        unknown: dict[str, Any] = {name: 9}
        assert violation(convert.job_from_proto, job_pb2.Job(**unknown)).field == f"job.{name}"
    bad_strategy = job_pb2.Job(retry_policy=job_pb2.RetryPolicy(strategy=7))  # type: ignore[arg-type]
    assert violation(convert.job_from_proto, bad_strategy).field == "job.retry_policy.strategy"


CURRENT_FIXED = JOBS[0].with_changes(retry_policy=RetryPolicy(3, RetryStrategy.FIXED_BACKOFF, 10, 600, 2.0))


def changes(paths: list[str], current: Job = CURRENT_FIXED, **fields: Any) -> dict[str, Any]:
    return convert.job_changes_from_proto(job_pb2.Job(**fields), paths, current)


def test_update_changes_follow_the_mask() -> None:
    assert changes(["name", "cron_expr"], name="new", cron_expr=" @hourly ") == {"name": "new", "cron_expr": "@hourly"}
    assert changes([], id="x", version=3, queue="q") == {"queue": "q"}
    assert changes(["timeout_seconds"]) == {"timeout_seconds": 3600}  # a masked zero takes its default
    assert changes(["retry_policy.max_attempts"], retry_policy=job_pb2.RetryPolicy(max_attempts=9)) == {
        "retry_policy": RetryPolicy(9, RetryStrategy.FIXED_BACKOFF, 10, 600, 2.0)
    }
    assert changes(["retry_policy.bogus", "nope"]) == {"retry_policy.bogus": None, "nope": None}
    assert changes(["scheduled_at"], scheduled_at=convert.timestamp_to_proto(NOW)) == {"scheduled_at": NOW}


def test_an_updates_multiplier_is_checked_against_the_strategy_it_will_have() -> None:
    sent = job_pb2.RetryPolicy(multiplier=3)
    assert violation(changes, ["retry_policy.multiplier"], retry_policy=sent) == STRAY
    exponential = job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_EXPONENTIAL_BACKOFF, multiplier=3)
    both = changes(["retry_policy.multiplier", "retry_policy.strategy"], retry_policy=exponential)
    assert both["retry_policy"] == RetryPolicy(3, RetryStrategy.EXPONENTIAL_BACKOFF, 10, 600, 3.0)
    # Left out of the mask, the multiplier is not part of the change.
    fixed = job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED_BACKOFF, multiplier=3)
    assert changes(["retry_policy.strategy"], current=JOBS[0], retry_policy=fixed)["retry_policy"].multiplier == 1.5
    assert violation(changes, ["retry_policy"], current=JOBS[0], retry_policy=fixed) == STRAY
    assert violation(changes, [], current=JOBS[0], retry_policy=fixed) == STRAY


def test_a_page_of_jobs_carries_its_token_and_total() -> None:
    pb = convert.job_page_to_proto(Page([JOBS[0]], "next", 41))
    assert (len(pb.jobs), pb.next_page_token, pb.total_size) == (1, "next", 41)
    assert convert.job_page_to_proto(Page([], "")).total_size == 0


def test_preview_slots_round_trip() -> None:
    paris = ZoneInfo("Europe/Paris")
    slots = [
        PreviewSlot(NOW, NOW.astimezone(paris), "+01:00", False, ""),
        PreviewSlot(
            datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
            datetime(2026, 3, 29, 3, 0, tzinfo=paris),
            "+02:00",
            True,
            "the scheduled local time does not exist (DST gap); fires at the first valid instant after it",
        ),
    ]
    pb = convert.preview_to_proto(slots, "At 02:30")
    assert pb.description == "At 02:30"
    back = [convert.fire_time_from_proto(f) for f in pb.fire_times]
    assert back == slots
    assert [b.local.utcoffset() for b in back] == [s.local.utcoffset() for s in slots]


# Runs ------------------------------------------------------------------------------

RUNS = [
    Run("r1", "j1", 1, RunStatus.PENDING, RunTrigger.SCHEDULE, NOW, NOW + timedelta(seconds=5)),
    Run(
        "r2",
        "j1",
        3,
        RunStatus.FAILED,
        RunTrigger.RETRY,
        NOW,
        NOW + timedelta(minutes=1),
        queued_at=NOW + timedelta(minutes=1),
        started_at=NOW + timedelta(minutes=2),
        finished_at=NOW + timedelta(minutes=3),
        worker_id="w-1",
        exit_code=2,
        error="exit status 2",
    ),
    Run("r3", "j1", 1, RunStatus.SKIPPED, RunTrigger.CATCH_UP, NOW, NOW, finished_at=NOW, skip_reason="overlap"),
]


@pytest.mark.parametrize("run", RUNS, ids=["pending", "failed", "skipped"])
def test_runs_round_trip(run: Run) -> None:
    assert convert.run_from_proto(convert.run_to_proto(run)) == run


def test_what_a_run_keeps_to_the_server_is_not_sent() -> None:
    held = replace(RUNS[1], fencing_token="secret", queue="q", cancel_requested=True)
    assert convert.run_from_proto(convert.run_to_proto(held)) == RUNS[1]
    assert "secret" not in str(convert.run_to_proto(held))


def test_a_page_of_runs_carries_its_token() -> None:
    pb = convert.run_page_to_proto(Page(RUNS, "tok"))
    assert [r.id for r in pb.runs] == ["r1", "r2", "r3"] and pb.next_page_token == "tok"


def test_run_output_round_trips() -> None:
    for output in (RunOutput("r1"), RunOutput("r1", "out\n", "err\n", True, False)):
        assert convert.run_output_from_proto(convert.run_output_to_proto(output)) == output


@pytest.mark.parametrize(
    "event", [RUNS[1], OutputChunk(LogStream.STDOUT, "hello\n"), OutputChunk(LogStream.STDERR, "oops\n")]
)
def test_watch_events_round_trip(event: Run | OutputChunk) -> None:
    assert convert.watch_event_from_proto(convert.watch_event_to_proto(event)) == event


def test_a_chunk_names_its_stream() -> None:
    pb = convert.watch_event_to_proto(OutputChunk(LogStream.STDERR, "x"))
    assert pb.WhichOneof("event") == "chunk" and pb.chunk.stream == run_pb2.LOG_STREAM_STDERR


# Accounts --------------------------------------------------------------------------

USERS = [User(f"u{r.value}", f"name-{r.value}", f"{r.value}@example.com", r, "", NOW) for r in Role]


@pytest.mark.parametrize("user", [*USERS, replace(USERS[1], disabled=True)])
def test_users_round_trip(user: User) -> None:
    assert convert.user_from_proto(convert.user_to_proto(user)) == user


def test_a_users_secrets_are_not_sent() -> None:
    user = User("u1", "ann", "ann@example.com", Role.ADMIN, "$argon2id$secret", NOW, token_version=4)
    pb = convert.user_to_proto(user)
    assert "argon2" not in str(pb)
    back = convert.user_from_proto(pb)
    assert (back.password_hash, back.token_version) == ("", 0)


def test_a_page_of_users_carries_its_token() -> None:
    pb = convert.user_page_to_proto(Page(USERS, "more", 3))
    assert [u.role for u in pb.users] == [auth_pb2.ROLE_ADMIN, auth_pb2.ROLE_USER, auth_pb2.ROLE_VIEWER]
    assert pb.next_page_token == "more"


@pytest.mark.parametrize(
    "response",
    [auth_pb2.SignUpResponse, auth_pb2.LoginResponse, auth_pb2.RefreshResponse, auth_pb2.ChangePasswordResponse],
)
def test_a_session_fills_every_response_that_carries_one(response: Any) -> None:
    session = Session("access.jwt", "refresh-token", USERS[2], 900)
    pb = convert.session_to_proto(session, response)
    assert isinstance(pb, response)
    assert (pb.access_token, pb.token, pb.refresh_token, pb.expires_in) == (
        "access.jwt",
        "access.jwt",
        "refresh-token",
        900,
    )
    assert (pb.user_id, pb.email, pb.username, pb.role) == (
        "uVIEWER",
        "VIEWER@example.com",
        "name-VIEWER",
        auth_pb2.ROLE_VIEWER,
    )


# Health ----------------------------------------------------------------------------


def test_health_reports_round_trip() -> None:
    report = HealthReport(
        HealthStatus.DEGRADED,
        [
            Component("database", HealthStatus.SERVING, "1.2 ms"),
            Component("workers", HealthStatus.DEGRADED, "0 alive"),
            Component("redis", HealthStatus.NOT_SERVING, "connection refused"),
        ],
        NOW,
    )
    pb = convert.health_report_to_proto(report)
    assert pb.status == health_pb2.HEALTH_STATUS_DEGRADED
    assert convert.health_report_from_proto(pb) == report


def test_figures_round_trip() -> None:
    for figures in (
        Figures(),
        Figures({"ACTIVE": 3}, {"QUEUED": 1}, {"default": 1}, 2, 1.5, 10, 600, 0.25, 4.0, 950, 2),
    ):
        assert convert.figures_from_proto(convert.figures_to_proto(figures)) == figures

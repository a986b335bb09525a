"""The request rules (core/validation.check_request): every string field of every
request has a limit that fits its database column, text holds no control or bidi
characters, enums and timestamps hold what their types define."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from core import validation
from core.errors import InvalidArgument, Violations
from db.models import JobRow, UserRow
from gen.jobmesh.v1 import auth_pb2, health_pb2, job_pb2, run_pb2

SERVICES = [
    job_pb2.DESCRIPTOR.services_by_name["JobService"],
    run_pb2.DESCRIPTOR.services_by_name["RunService"],
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    health_pb2.DESCRIPTOR.services_by_name["HealthService"],
]


def string_fields(descriptor: Descriptor, seen: set[str] | None = None) -> set[str]:
    """Full names of the string fields of ``descriptor`` and of every message in it."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return set()
    seen.add(descriptor.full_name)
    out: set[str] = set()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            out.add(field.full_name)
        elif field.message_type is not None:
            out |= string_fields(field.message_type, seen)
    return out


def test_every_string_field_of_every_request_has_its_own_rule() -> None:
    fields: set[str] = set()
    for service in SERVICES:
        for method in service.methods:
            fields |= string_fields(method.input_type)
    missing = sorted(fields - set(validation.TEXT_RULES))
    assert not missing, f"add a TextRule to core/validation.TEXT_RULES for {missing}"
    stale = sorted(set(validation.TEXT_RULES) - fields)
    assert not stale, f"TEXT_RULES names fields no request has: {stale}"


STORED_IN: dict[str, Any] = {
    "jobmesh.v1.Job.id": JobRow.id,
    "jobmesh.v1.Job.owner_id": JobRow.owner_id,
    "jobmesh.v1.Job.name": JobRow.name,
    "jobmesh.v1.Job.cron_expr": JobRow.cron_expr,
    "jobmesh.v1.Job.timezone": JobRow.timezone,
    "jobmesh.v1.Job.queue": JobRow.queue,
    "jobmesh.v1.CreateJobRequest.request_id": JobRow.request_id,
    "jobmesh.v1.SignUpRequest.username": UserRow.username,
    "jobmesh.v1.SignUpRequest.email": UserRow.email,
}


@pytest.mark.parametrize("name", sorted(STORED_IN))
def test_limits_fit_the_column_on_every_backend(name: str) -> None:
    rule = validation.TEXT_RULES[name]
    length = STORED_IN[name].property.columns[0].type.length
    assert rule.max_chars is not None and rule.max_chars <= length, (name, rule, length)


LINE = validation.TextRule(validation.TextForm.LINE, 200)
CRON = validation.TextRule(validation.TextForm.CRON, 255)


@pytest.mark.parametrize(
    "text",
    ["a\x00b", "\x1b[31mred", "\x9b31m", "x\x7f", "evil\u202etxt", "\u2066isolate\u2069", "two\nlines", "a\rb",
     "a\u2028b", "a\u2029b", "tab\there"],
)  # fmt: skip
def test_text_with_control_or_bidi_characters_is_refused(text: str) -> None:
    problem = validation.text_problem(text, LINE)
    assert problem.startswith("must not contain"), text
    assert f"U+{ord(next(c for c in text if not c.isprintable())):04X}" in problem


@pytest.mark.parametrize(
    "text", ["", "plain", "Ünïcødé ジョブ", "family 👨\u200d👩\u200d👧", "שלום", "non\xa0breaking", "soft\xadhyphen"]
)
def test_text_in_any_script_is_accepted(text: str) -> None:
    assert validation.text_problem(text, LINE) == ""


def test_cron_expressions_may_separate_fields_with_tabs_only_there() -> None:
    assert validation.text_problem("0\t9 * * *", CRON) == ""
    assert validation.text_problem("0\t9 * * *", LINE) != ""
    assert validation.text_problem("0 9 * * *\x00", CRON) != ""


def test_lengths_are_counted_in_characters() -> None:
    assert validation.text_problem("界" * 200, LINE) == ""
    assert validation.text_problem("界" * 201, LINE) == "must be at most 200 characters (got 201)"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("01890a5d-ac96-774b-bcce-b302099a8057", True), ("01890A5D-AC96-774B-BCCE-B302099A8057", True), ("", True),
     ("{01890a5dac96774bbcceb302099a8057}", False), ("urn:uuid:01890a5d-ac96-774b-bcce-b302099a8057", False),
     ("01890a5d-ac96-774b-bcce-b302099a805", False), ("01890a5d-ac96-774b-bcce-b302099a8057\n", False)],
)  # fmt: skip
def test_ids_are_uuids_in_their_one_written_form(value: str, ok: bool) -> None:
    rule = validation.TEXT_RULES["jobmesh.v1.GetJobRequest.id"]
    assert (validation.text_problem(value, rule) == "") is ok


def violations(message: Any) -> dict[str, str]:
    v = Violations()
    validation.check_request(v, message)
    return {item.field: item.description for item in v.items}


def test_unknown_enum_numbers_are_refused_at_any_depth() -> None:
    job = job_pb2.Job(misfire_policy=99, retry_policy=job_pb2.RetryPolicy(strategy=77))  # type: ignore[arg-type]
    found = violations(job_pb2.CreateJobRequest(job=job))
    assert set(found) == {"job.misfire_policy", "job.retry_policy.strategy"}
    assert "has no value 99" in found["job.misfire_policy"] and "MISFIRE_POLICY_SKIP" in found["job.misfire_policy"]
    assert set(violations(job_pb2.ListJobsRequest(state=-1))) == {"state"}  # type: ignore[arg-type]
    assert violations(job_pb2.ListJobsRequest(state=job_pb2.JOB_STATE_DELETED)) == {}


@pytest.mark.parametrize(
    ("seconds", "nanos", "ok"),
    [(-62_135_596_800, 0, True), (253_402_300_799, 999_999_999, True), (-62_135_596_801, 0, False),
     (253_402_300_800, 0, False), (0, 1_000_000_000, False), (0, -1, False), (2**62, 0, False)],
)  # fmt: skip
def test_timestamps_hold_instants_of_the_calendar(seconds: int, nanos: int, ok: bool) -> None:
    request = job_pb2.PreviewScheduleRequest(after=Timestamp(seconds=seconds, nanos=nanos))
    assert (violations(request) == {}) is ok


def test_repeated_fields_are_counted_and_each_entry_checked() -> None:
    update = job_pb2.Job(id="01890a5d-ac96-774b-bcce-b302099a8057", version=1)
    many = job_pb2.UpdateJobRequest(job=update, update_mask=FieldMask(paths=["name"] * 33))
    assert set(violations(many)) == {"update_mask.paths"}
    odd = job_pb2.UpdateJobRequest(job=update, update_mask=FieldMask(paths=["name", "x" * 65]))
    assert set(violations(odd)) == {"update_mask.paths[1]"}


def test_validate_request_reports_every_mistake_at_once() -> None:
    job = job_pb2.Job(name="\x00", timezone="x" * 65, state=9)  # type: ignore[arg-type]
    request = job_pb2.CreateJobRequest(job=job, request_id="r" * 65)
    with pytest.raises(InvalidArgument) as info:
        validation.validate_request(request)
    assert {v.field for v in info.value.violations} == {"job.name", "job.timezone", "job.state", "request_id"}

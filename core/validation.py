"""Input rules for jobs and accounts. Each rule names the field it checks.

Two layers, each rule in one of them:

- ``check_request`` holds every request message to what its wire types cannot say:
  each string within its length (the database column's, on every backend) and of
  its form (one line of visible text, or a UUID), each enum a value the enum has,
  each timestamp a real instant, each repeated field within its count. The gRPC
  interceptor applies it to every request before a servicer sees it.
- ``check_job`` and the others below hold the domain's rules: ranges, cron
  expressions, time zones, scripts, combinations of fields.

Validators collect every violation, then raise one ``InvalidArgument`` so a
client sees all its mistakes at once; nothing is written before they pass.
"""

from __future__ import annotations

import enum
import hashlib
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from core import cron
from core.domain import Job, JobType, RetryPolicy, RetryStrategy
from core.errors import Violations
from core.ids import is_uuid

MAX_SCRIPT_BYTES = 256 * 1024
MAX_NAME_CHARS = 200
MAX_CRON_CHARS = 255
MAX_TIMEZONE_CHARS = 64
MAX_QUEUE_CHARS = 64
MAX_TIMEOUT_SECONDS = 86400
MAX_DELAY_SECONDS = 86400
MAX_ATTEMPTS = 100
MAX_REQUEST_ID_CHARS = 64
MAX_PAGE_TOKEN_CHARS = 128
MAX_MASK_PATHS = 32
MAX_MASK_PATH_CHARS = 64
MAX_USERNAME_CHARS = 64
MAX_EMAIL_CHARS = 254
MAX_REFRESH_TOKEN_CHARS = 128
UUID_CHARS = 36
SCHEDULED_AT_MAX_PAST = timedelta(days=1)
QUEUE_RE = re.compile(r"[a-z0-9_-]{1,64}")
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,64}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MIN_PASSWORD, MAX_PASSWORD = 8, 128


def check_cron(v: Violations, field: str, expression: str) -> cron.CronSchedule | None:
    try:
        return cron.parse(expression)
    except cron.CronError as exc:
        v.add(field, str(exc))
        return None


def check_timezone(v: Violations, field: str, name: str) -> None:
    try:
        cron.zone(name)
    except cron.CronError as exc:
        v.add(field, str(exc))


def check_script(v: Violations, field: str, source: str) -> None:
    try:
        encoded = source.encode("utf-8")
    except UnicodeEncodeError:
        v.add(field, "must be valid UTF-8")
        return
    if not source.strip():
        v.add(field, "is required")
        return
    if len(encoded) > MAX_SCRIPT_BYTES:
        v.add(field, f"must be at most {MAX_SCRIPT_BYTES} bytes (got {len(encoded)})")
        return
    problem = _compile_problem(encoded)
    if problem:
        v.add(field, problem)


_COMPILED: OrderedDict[bytes, str] = OrderedDict()
_COMPILED_MAX = 1024


def _compile_problem(encoded: bytes) -> str:
    """Why the script does not compile ("" when it does). Many jobs share a script,
    so verdicts are remembered by digest (the sources themselves are not kept)."""
    digest = hashlib.blake2b(encoded, digest_size=16).digest()
    problem = _COMPILED.get(digest)
    if problem is not None:
        _COMPILED.move_to_end(digest)
        return problem
    try:
        compile(encoded, "<job script>", "exec", dont_inherit=True)
        problem = ""
    except SyntaxError as exc:
        problem = f"does not compile: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        problem = f"does not compile: {exc}"
    _COMPILED[digest] = problem
    if len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return problem


def check_retry_policy(v: Violations, field: str, policy: RetryPolicy) -> None:
    """The policy's ranges (a multiplier sent for a strategy without one is refused
    when the request is read: core/convert.py)."""
    if not 1 <= policy.max_attempts <= MAX_ATTEMPTS:
        v.add(f"{field}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    for name in ("initial_delay_seconds", "max_delay_seconds"):
        value = getattr(policy, name)
        if not 0 <= value <= MAX_DELAY_SECONDS:
            v.add(f"{field}.{name}", f"must be between 0 and {MAX_DELAY_SECONDS} seconds")
    if policy.initial_delay_seconds > policy.max_delay_seconds:
        v.add(f"{field}.initial_delay_seconds", "must not exceed max_delay_seconds")
    if policy.strategy is RetryStrategy.EXPONENTIAL_BACKOFF and not 1.0 <= policy.multiplier <= 10.0:
        v.add(f"{field}.multiplier", "must be between 1 and 10")  # NaN is within no range


def check_job(v: Violations, job: Job, now: datetime, prefix: str = "job") -> None:
    """Every domain rule of a complete job (create, and update after the mask is applied);
    check_request has held each field of the request to its length and form."""
    if job.job_type is None:
        v.add(f"{prefix}.job_type", "is required: JOB_TYPE_ONE_TIME or JOB_TYPE_RECURRING")
    elif job.job_type is JobType.ONE_TIME:
        if job.scheduled_at is None:
            v.add(f"{prefix}.scheduled_at", "is required for a one-time job")
        elif job.scheduled_at < now - SCHEDULED_AT_MAX_PAST:
            v.add(f"{prefix}.scheduled_at", "must not be more than 1 day in the past")
        if job.cron_expr:
            v.add(f"{prefix}.cron_expr", "must be empty for a one-time job")
    else:
        if not job.cron_expr:
            v.add(f"{prefix}.cron_expr", "is required for a recurring job")
        else:
            check_cron(v, f"{prefix}.cron_expr", job.cron_expr)
        if job.scheduled_at is not None:
            v.add(f"{prefix}.scheduled_at", "must be empty for a recurring job")
    check_timezone(v, f"{prefix}.timezone", job.timezone)
    check_script(v, f"{prefix}.script_content", job.script_content)
    if not 1 <= job.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        v.add(f"{prefix}.timeout_seconds", f"must be between 1 and {MAX_TIMEOUT_SECONDS} seconds")
    check_retry_policy(v, f"{prefix}.retry_policy", job.retry_policy)
    if not QUEUE_RE.fullmatch(job.queue):
        v.add(f"{prefix}.queue", "must match [a-z0-9_-]{1,64}")
    if not 0 <= job.max_lateness_seconds <= MAX_DELAY_SECONDS:
        v.add(f"{prefix}.max_lateness_seconds", f"must be between 0 and {MAX_DELAY_SECONDS} seconds")


def validate_job(job: Job, now: datetime, prefix: str = "job") -> None:
    v = Violations()
    check_job(v, job, now, prefix)
    v.raise_if_any()


def check_page_size(v: Violations, page_size: int, field: str = "page_size") -> int:
    if page_size < 0 or page_size > 500:
        v.add(field, "must be between 0 and 500 (0 means 20)")
    return page_size or 20


def validate_signup(username: str, email: str, password: str) -> None:
    v = Violations()
    if not USERNAME_RE.fullmatch(username):
        v.add("username", "must be 3-64 characters of letters, digits, '_', '.' or '-'")
    if len(email) > 254 or not EMAIL_RE.fullmatch(email):
        v.add("email", "must be a valid email address")
    check_password(v, password)
    v.raise_if_any()


def check_password(v: Violations, password: str, field: str = "password") -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        v.add(field, f"must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")


def normalize_email(email: str) -> str:
    return email.strip().lower()


# Request messages, field by field -------------------------------------------------


class TextForm(enum.Enum):
    """What a string field of a request may hold."""

    LINE = "line"  # one line of visible text: no control, line-break or bidi-control character
    CRON = "cron"  # a LINE in which tabs may separate the fields
    UUID = "uuid"  # a UUID (8-4-4-4-12 hex digits), or empty where the request allows
    ANY = "any"  # any text (a password, a script's source)


@dataclass(frozen=True)
class TextRule:
    form: TextForm
    max_chars: int | None  # None: measured where the rule is, in UTF-8 bytes (check_script)


_ID = TextRule(TextForm.UUID, UUID_CHARS)
_PAGE_TOKEN = TextRule(TextForm.LINE, MAX_PAGE_TOKEN_CHARS)

# Every string field of every request message, by its full proto name. Lengths are
# in characters and never exceed the database column the value is stored in
# (db/models.py), so every backend refuses and accepts the same values.
TEXT_RULES: dict[str, TextRule] = {
    "jobmesh.v1.Job.id": _ID,
    "jobmesh.v1.Job.owner_id": _ID,
    "jobmesh.v1.Job.name": TextRule(TextForm.LINE, MAX_NAME_CHARS),
    "jobmesh.v1.Job.cron_expr": TextRule(TextForm.CRON, MAX_CRON_CHARS),
    "jobmesh.v1.Job.timezone": TextRule(TextForm.LINE, MAX_TIMEZONE_CHARS),
    "jobmesh.v1.Job.script_content": TextRule(TextForm.ANY, None),
    "jobmesh.v1.Job.queue": TextRule(TextForm.LINE, MAX_QUEUE_CHARS),
    "jobmesh.v1.Job.schedule_description": TextRule(TextForm.LINE, 1024),  # output only: ignored on input
    "jobmesh.v1.CreateJobRequest.request_id": TextRule(TextForm.LINE, MAX_REQUEST_ID_CHARS),
    "jobmesh.v1.GetJobRequest.id": _ID,
    "jobmesh.v1.ListJobsRequest.page_token": _PAGE_TOKEN,
    "jobmesh.v1.ListJobsRequest.owner_id": _ID,
    "jobmesh.v1.ListJobsRequest.queue": TextRule(TextForm.LINE, MAX_QUEUE_CHARS),
    "jobmesh.v1.ListJobsRequest.name_contains": TextRule(TextForm.LINE, MAX_NAME_CHARS),
    "jobmesh.v1.DeleteJobRequest.id": _ID,
    "jobmesh.v1.PauseJobRequest.id": _ID,
    "jobmesh.v1.ResumeJobRequest.id": _ID,
    "jobmesh.v1.RunJobNowRequest.id": _ID,
    "jobmesh.v1.PreviewScheduleRequest.cron_expr": TextRule(TextForm.CRON, MAX_CRON_CHARS),
    "jobmesh.v1.PreviewScheduleRequest.timezone": TextRule(TextForm.LINE, MAX_TIMEZONE_CHARS),
    "google.protobuf.FieldMask.paths": TextRule(TextForm.LINE, MAX_MASK_PATH_CHARS),
    "jobmesh.v1.ListRunsRequest.job_id": _ID,
    "jobmesh.v1.ListRunsRequest.page_token": _PAGE_TOKEN,
    "jobmesh.v1.GetRunRequest.run_id": _ID,
    "jobmesh.v1.GetRunRequest.job_id": _ID,
    "jobmesh.v1.GetRunLogsRequest.run_id": _ID,
    "jobmesh.v1.GetRunLogsRequest.job_id": _ID,
    "jobmesh.v1.CancelRunRequest.run_id": _ID,
    "jobmesh.v1.CancelRunRequest.job_id": _ID,
    "jobmesh.v1.WatchRunRequest.run_id": _ID,
    "jobmesh.v1.WatchRunRequest.job_id": _ID,
    "jobmesh.v1.BatchListRecentRunsRequest.job_ids": _ID,
    "jobmesh.v1.SignUpRequest.username": TextRule(TextForm.LINE, MAX_USERNAME_CHARS),
    "jobmesh.v1.SignUpRequest.email": TextRule(TextForm.LINE, MAX_EMAIL_CHARS),
    "jobmesh.v1.SignUpRequest.password": TextRule(TextForm.ANY, MAX_PASSWORD),
    # No account has a longer email or password, so a longer one can only be wrong.
    "jobmesh.v1.LoginRequest.email": TextRule(TextForm.LINE, MAX_EMAIL_CHARS),
    "jobmesh.v1.LoginRequest.password": TextRule(TextForm.ANY, MAX_PASSWORD),
    "jobmesh.v1.RefreshRequest.refresh_token": TextRule(TextForm.LINE, MAX_REFRESH_TOKEN_CHARS),
    "jobmesh.v1.ListUsersRequest.page_token": _PAGE_TOKEN,
    "jobmesh.v1.SetUserRoleRequest.user_id": _ID,
    "jobmesh.v1.ChangePasswordRequest.current_password": TextRule(TextForm.ANY, MAX_PASSWORD),
    "jobmesh.v1.ChangePasswordRequest.new_password": TextRule(TextForm.ANY, MAX_PASSWORD),
    "jobmesh.v1.SetUserDisabledRequest.user_id": _ID,
}
# A string field missing from TEXT_RULES (tests/unit/test_validation.py fails on one).
DEFAULT_TEXT_RULE = TextRule(TextForm.LINE, 1024)
MAX_REPEATED = {"google.protobuf.FieldMask.paths": MAX_MASK_PATHS}
DEFAULT_MAX_REPEATED = 100

# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
_TIMESTAMP = "google.protobuf.Timestamp"
# Explicit directional embeddings, overrides and isolates: they reorder how the text
# around them is shown (the "Trojan Source" characters).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Control characters (NUL, ESC of ANSI sequences, C1), lone surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def text_rule(field: FieldDescriptor) -> TextRule:
    return TEXT_RULES.get(field.full_name, DEFAULT_TEXT_RULE)


def text_problem(text: str, rule: TextRule) -> str:
    """Why ``text`` breaks ``rule`` ("" when it does not)."""
    if rule.max_chars is not None and len(text) > rule.max_chars:
        return f"must be at most {rule.max_chars} characters (got {len(text)})"
    if rule.form is TextForm.UUID:
        return "" if not text or is_uuid(text) else "must be a UUID"
    if rule.form is TextForm.ANY or text.isprintable():  # isprintable: the common case, decided in C
        return ""
    for index, char in enumerate(text):
        if char == "\t" and rule.form is TextForm.CRON:
            continue
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            return (
                "must not contain control, line-break or bidirectional-override characters "
                f"(U+{ord(char):04X} at position {index})"
            )
    return ""


def enum_problem(enum_type: EnumDescriptor, number: int) -> str:
    """Why ``number`` is no value of ``enum_type`` ("" when it is one)."""
    if number in enum_type.values_by_number:
        return ""
    return f"has no value {number}; use one of {', '.join(e.name for e in enum_type.values)}"


def timestamp_problem(seconds: int, nanos: int) -> str:
    if not 0 <= nanos <= 999_999_999:
        return f"nanos must be between 0 and 999999999 (got {nanos})"
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        return "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
    return ""


def _check_value(v: Violations, field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        problem = text_problem(value, text_rule(field))
    elif field.type == FieldDescriptor.TYPE_BYTES:
        limit = DEFAULT_TEXT_RULE.max_chars or 0
        problem = f"must be at most {limit} bytes" if len(value) > limit else ""
    elif field.enum_type is not None:
        problem = enum_problem(field.enum_type, value)
    elif field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            problem = timestamp_problem(value.seconds, value.nanos)
        else:
            check_request(v, value, f"{path}.")
            return
    else:
        return  # numbers: their ranges are domain rules
    if problem:
        v.add(path, problem)


def check_request(v: Violations, message: Message, prefix: str = "") -> None:
    """The rules of TEXT_RULES, enums, timestamps and counts, over every field set in
    ``message`` and the messages in it; fields are named by their proto path."""
    for field, value in message.ListFields():
        path = prefix + field.name
        if not field.is_repeated:
            _check_value(v, field, value, path)
            continue
        limit = MAX_REPEATED.get(field.full_name, DEFAULT_MAX_REPEATED)
        if len(value) > limit:
            v.add(path, f"must have at most {limit} entries (got {len(value)})")
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            for key, item in value.items():
                _check_value(v, key_field, key, f"{path}[{key!r}]")
                _check_value(v, value_field, item, f"{path}[{key!r}]")
            continue
        for index, item in enumerate(value):
            _check_value(v, field, item, f"{path}[{index}]")


def validate_request(message: Message) -> None:
    v = Violations()
    check_request(v, message)
    v.raise_if_any()

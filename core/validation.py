"""Input rules for jobs and accounts. Each rule names the field it checks.

Validators collect every violation, then raise one ``InvalidArgument`` so a
client sees all its mistakes at once; nothing is written before they pass.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from datetime import datetime, timedelta

from core import cron
from core.domain import Job, JobType, RetryPolicy, RetryStrategy
from core.errors import Violations

MAX_SCRIPT_BYTES = 256 * 1024
MAX_NAME_CHARS = 200
MAX_TIMEOUT_SECONDS = 86400
MAX_DELAY_SECONDS = 86400
MAX_ATTEMPTS = 100
MAX_REQUEST_ID_CHARS = 64
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


def check_retry_policy(v: Violations, field: str, policy: RetryPolicy, raw_multiplier: float | None) -> None:
    if not 1 <= policy.max_attempts <= MAX_ATTEMPTS:
        v.add(f"{field}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    for name in ("initial_delay_seconds", "max_delay_seconds"):
        value = getattr(policy, name)
        if not 0 <= value <= MAX_DELAY_SECONDS:
            v.add(f"{field}.{name}", f"must be between 0 and {MAX_DELAY_SECONDS} seconds")
    if policy.initial_delay_seconds > policy.max_delay_seconds:
        v.add(f"{field}.initial_delay_seconds", "must not exceed max_delay_seconds")
    if policy.strategy is RetryStrategy.EXPONENTIAL_BACKOFF:
        if not 1.0 <= policy.multiplier <= 10.0 or policy.multiplier != policy.multiplier:
            v.add(f"{field}.multiplier", "must be between 1 and 10")
    elif raw_multiplier:
        v.add(f"{field}.multiplier", "applies only to RETRY_STRATEGY_EXPONENTIAL_BACKOFF")


def check_job(v: Violations, job: Job, now: datetime, prefix: str = "job") -> None:
    """Every rule of a complete job (create, and update after the mask is applied)."""
    if len(job.name) > MAX_NAME_CHARS:
        v.add(f"{prefix}.name", f"must be at most {MAX_NAME_CHARS} characters")
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
    check_retry_policy(v, f"{prefix}.retry_policy", job.retry_policy, job.raw_multiplier)
    if not QUEUE_RE.fullmatch(job.queue):
        v.add(f"{prefix}.queue", "must match [a-z0-9_-]{1,64}")
    if job.raw_network is not None:
        v.add(f"{prefix}.network", f"must be NETWORK_NONE or NETWORK_HOST (got {job.raw_network})")
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

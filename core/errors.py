"""The project's exception tree.

    JobmeshError                 root; str() is safe to show a user
    ├── InvalidArgument          bad input; carries FieldViolation list
    ├── NotFound                 absent, or not visible to the caller
    ├── AlreadyExists            unique key taken
    ├── FailedPrecondition       illegal in the current state
    ├── Conflict                 optimistic-concurrency version mismatch
    ├── Unauthenticated          no/invalid credentials
    ├── PermissionDenied         authenticated but not allowed
    ├── ResourceExhausted        throttled
    ├── Unavailable              a dependency (database, Redis) is down
    ├── Unimplemented            not built yet
    └── Internal                 a fault of ours; details are logged, not returned

Each boundary translates in one table: db/errors.py (driver → these),
core/rpc.py (these → gRPC status), api_gateway (gRPC → HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class JobmeshError(Exception):
    """Root of every error jobmesh raises on purpose."""

    reason = "JOBMESH_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(JobmeshError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation] | FieldViolation, message: str | None = None) -> None:
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text)


class NotFound(JobmeshError):
    reason = "NOT_FOUND"


class AlreadyExists(JobmeshError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(JobmeshError):
    reason = "FAILED_PRECONDITION"


class Conflict(JobmeshError):
    reason = "VERSION_MISMATCH"


class Unauthenticated(JobmeshError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(JobmeshError):
    reason = "PERMISSION_DENIED"


class ResourceExhausted(JobmeshError):
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(JobmeshError):
    reason = "UNAVAILABLE"


class Unimplemented(JobmeshError):
    reason = "UNIMPLEMENTED"


class Internal(JobmeshError):
    reason = "INTERNAL"


class Violations:
    """Collects field violations so a request reports all its mistakes at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

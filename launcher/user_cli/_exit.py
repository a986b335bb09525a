"""Exit codes of the user commands, and how an error is told."""

from __future__ import annotations

import sys

from core import errors
from core.domain import Run, RunStatus

OK = 0
FAILED = 1  # the run failed (without an exit code of its own)
INVALID = 2  # a wrong command line (Click's code for it), or the server refused the request
NOT_FOUND = 3
DENIED = 4  # not signed in, token refused, or the role does not allow it
UNAVAILABLE = 5  # the server cannot be reached or failed

EXIT_CODE_OF: dict[type[errors.JobmeshError], int] = {
    errors.InvalidArgument: INVALID,
    errors.AlreadyExists: INVALID,
    errors.FailedPrecondition: INVALID,
    errors.Conflict: INVALID,
    errors.NotFound: NOT_FOUND,
    errors.Unauthenticated: DENIED,
    errors.PermissionDenied: DENIED,
    errors.Unavailable: UNAVAILABLE,
    errors.ResourceExhausted: UNAVAILABLE,
    errors.Unimplemented: UNAVAILABLE,
    errors.Internal: UNAVAILABLE,
}


def exit_code_of(error: errors.JobmeshError) -> int:
    for cls in type(error).__mro__:
        if cls in EXIT_CODE_OF:
            return EXIT_CODE_OF[cls]
    return UNAVAILABLE


def report(error: errors.JobmeshError) -> int:
    """Tells ``error`` on stderr (each refused field on its own line) and gives its exit code."""
    if isinstance(error, errors.InvalidArgument) and error.violations:
        for violation in error.violations:
            print(f"error: {violation.field}: {violation.description}", file=sys.stderr)
    else:
        print(f"error: {error.message}", file=sys.stderr)
    if isinstance(error, errors.Unauthenticated):
        print("hint: sign in with `jobmesh login`", file=sys.stderr)
    return exit_code_of(error)


def exit_code_of_run(run: Run) -> int:
    """The command's exit code for a run that ended: 0 when it succeeded, the script's
    own code when it exited with one (128+N for a signal N), else 1."""
    if run.status is RunStatus.SUCCEEDED:
        return OK
    if run.status is RunStatus.FAILED and 0 < run.exit_code < 256:
        return run.exit_code
    if run.status is RunStatus.FAILED and -64 < run.exit_code < 0:
        return 128 - run.exit_code
    return FAILED

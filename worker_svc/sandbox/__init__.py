"""Isolated execution of untrusted scripts: one private module per concern, one
public surface here.

- ``_limits``: what a run is allowed (rlimits, the sandbox's settings, its
  environment, its read-only view of the host);
- ``_uids``: one unprivileged uid per concurrent run;
- ``_cgroups``: the run's pids and memory cgroups;
- ``_workdirs``: the worker's copies of the scripts;
- ``_runner``: what the run's own process does (namespaces, mounts, privileges,
  the script as ``__main__``);
- ``_streams``: its output;
- ``_forkserver`` and ``_executors``: the two ways of starting it.
"""

from worker_svc.sandbox._executors import (
    HOST_NETWORK_REFUSED,
    ExecResult,
    Executor,
    ExecutorError,
    ForkServerExecutor,
    IsolatingExecutor,
    NoopExecutor,
    Outcome,
    SubprocessExecutor,
)
from worker_svc.sandbox._limits import Limits, Sandbox
from worker_svc.sandbox._streams import OUTPUT_GATHER_SECONDS, OutputCallback

__all__ = [
    "HOST_NETWORK_REFUSED",
    "OUTPUT_GATHER_SECONDS",
    "ExecResult",
    "Executor",
    "ExecutorError",
    "ForkServerExecutor",
    "IsolatingExecutor",
    "Limits",
    "NoopExecutor",
    "Outcome",
    "OutputCallback",
    "Sandbox",
    "SubprocessExecutor",
]

"""Every Redis key jobmesh uses, and the queue message format (every operation on
them is in ``core.dispatch_queue``).

Redis is a cache of dispatch, never the source of truth: everything here can be
lost (FLUSHALL, restart) and rebuilt from the database by the reconciler.

    jobmesh:queue:{queue}          LIST  run messages waiting (LPUSH in, BLMOVE out)
    jobmesh:processing:{worker}    LIST  messages a worker popped and has not finished
    jobmesh:inflight               ZSET  run id -> push time, for runs pushed and not finished
    jobmesh:workers                ZSET  worker id -> last heartbeat (unix seconds)
    jobmesh:worker:{worker}        HASH  what a worker says of itself (sandbox: on/off), set with each
                                         heartbeat, expires when the heartbeats stop
    jobmesh:schedulers             ZSET  scheduler id -> last loop heartbeat
    jobmesh:cancel                 PUBSUB channel: run ids to kill now
    jobmesh:cancel:{run}           STRING set when a cancel is requested (for late subscribers)
    jobmesh:runlog:{run}           STREAM live output and status changes of a run (capped, expires)
    jobmesh:queues                 SET   names of queues ever pushed to (for metrics)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "jobmesh:"
WORKERS = PREFIX + "workers"
SCHEDULERS = PREFIX + "schedulers"
INFLIGHT = PREFIX + "inflight"
CANCEL_CHANNEL = PREFIX + "cancel"
QUEUES = PREFIX + "queues"


def queue(name: str) -> str:
    return f"{PREFIX}queue:{name}"


def processing(worker_id: str) -> str:
    return f"{PREFIX}processing:{worker_id}"


def worker_info(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"


def cancel_flag(run_id: str) -> str:
    return f"{PREFIX}cancel:{run_id}"


def run_log_channel(run_id: str) -> str:
    return f"{PREFIX}runlog:{run_id}"


@dataclass(frozen=True)
class QueueMessage:
    run_id: str
    scheduled_at: datetime
    due_at: datetime
    queue: str

    def encode(self) -> str:
        return json.dumps(
            {"r": self.run_id, "s": self.scheduled_at.isoformat(), "d": self.due_at.isoformat(), "q": self.queue},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> QueueMessage:
        data = json.loads(raw)
        return cls(
            run_id=str(data["r"]),
            scheduled_at=datetime.fromisoformat(data["s"]).astimezone(UTC),
            due_at=datetime.fromisoformat(data["d"]).astimezone(UTC),
            queue=str(data["q"]),
        )

"""Every Redis key jobmesh uses, and the queue message format (every operation on
them is in ``core.dispatch_queue``).

Redis is a cache of dispatch, never the source of truth: everything here can be
lost (FLUSHALL, restart) and rebuilt from the database by the reconciler.

The keys one script or MULTI touches share a hash tag, so that on a Redis Cluster they
live in one slot: a queue's keys (its list, its in-flight set, the processing lists
of the workers that pop it, and the cancel flags and live logs of its runs) carry
``{q:<queue>}``; the mesh-wide keys carry ``{mesh}``. On a single Redis the tags are
just part of the names.

    jobmesh:{q:<queue>}:queue              LIST   run messages waiting (LPUSH in, LMOVE/BLMOVE out)
    jobmesh:{q:<queue>}:processing:<wkr>   LIST   messages a worker popped from the queue and has not finished
    jobmesh:{q:<queue>}:inflight           ZSET   run id -> push time, for the queue's runs pushed and not finished
    jobmesh:{q:<queue>}:cancel:<run>       STRING set when a cancel is requested (for late subscribers)
    jobmesh:{q:<queue>}:runlog:<run>       STREAM live output and status changes of a run (capped, expires)
    jobmesh:{mesh}:workers                 ZSET   worker id -> last heartbeat (unix seconds)
    jobmesh:{mesh}:worker:<wkr>            HASH   what a worker says of itself (sandbox: on/off), set with each
                                                  heartbeat, expires when the heartbeats stop
    jobmesh:{mesh}:schedulers              ZSET   scheduler id -> last loop heartbeat
    jobmesh:{mesh}:queues                  SET    names of queues ever pushed to (metrics, the reaper)
    jobmesh:cancel                         PUBSUB channel: run ids to kill now (a cluster forwards a
                                                  PUBLISH to every node)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "jobmesh:"
MESH = PREFIX + "{mesh}:"
WORKERS = MESH + "workers"
SCHEDULERS = MESH + "schedulers"
QUEUES = MESH + "queues"
CANCEL_CHANNEL = PREFIX + "cancel"


def _tag(queue: str) -> str:
    # Queue names are [a-z0-9_-]{1,64} (core.validation): no brace ends the tag early.
    return f"{PREFIX}{{q:{queue}}}:"


def queue(name: str) -> str:
    return _tag(name) + "queue"


def processing(queue: str, worker_id: str) -> str:
    return f"{_tag(queue)}processing:{worker_id}"


def inflight(queue: str) -> str:
    return _tag(queue) + "inflight"


def worker_info(worker_id: str) -> str:
    return f"{MESH}worker:{worker_id}"


def cancel_flag(queue: str, run_id: str) -> str:
    return f"{_tag(queue)}cancel:{run_id}"


def run_log_channel(queue: str, run_id: str) -> str:
    return f"{_tag(queue)}runlog:{run_id}"


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

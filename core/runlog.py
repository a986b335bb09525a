"""A run's live log: its output and status changes, as the worker appends them and
WatchRun reads them (through ``core.dispatch_queue``, which owns the Redis stream).

Stream ``jobmesh:{q:<queue>}:runlog:<run>`` holds entries ``{k: out|err|status|end, d: data}``
(``out`` and ``err`` spell a ``LogStream`` there, in short: every entry carries its
kind; the worker appends them in Lua scripts, a batch of runs per round trip); it is
capped and expires, since the database keeps the captured tails for good.

The cap is on bytes, whatever a script prints: an output entry also carries ``o``, the
offset of its first byte in the run's output (bytes dropped before it included), and
the append keeps only entries within the last ``LIVE_CAP_BYTES`` of output. A reader
that finds an entry further on than the end of the previous one knows how much it
missed (``Continuity``) and says so with ``truncation_marker``.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import LogStream

MAX_ENTRIES = 5000
TTL_SECONDS = 3600
# The kinds of the entries that are not output (an output entry's kind is its stream).
STATUS, END = "status", "end"
# The live output a run's stream keeps (its newest bytes; older ones are dropped), and
# the most one entry holds: the tail kept is between the two caps' difference and the
# cap. An entry of 60 KiB fits Redis's 64 KiB allocation (64 KiB would take 80).
LIVE_CAP_BYTES = 1024 * 1024
MAX_ENTRY_BYTES = 60 * 1024


@dataclass(frozen=True)
class LogEntry:
    id: str
    kind: LogStream | str  # the stream of an output entry; STATUS or END
    data: str
    offset: int | None = None  # output entries: where ``data`` starts in the run's output


def truncation_marker(dropped: int) -> str:
    """The line a follower gets (on stderr) where output it did not see was dropped."""
    return f"[output truncated: {dropped} bytes dropped]\n"


class Continuity:
    """Follows the offsets of a run's output entries, read in order from any point.

    ``marker(entry)`` is what to show just before ``entry``: the truncation marker when
    output came before it that this reader never got (dropped by the cap, or trimmed
    while the reader lagged behind or before it joined), on a line of its own; else "".
    """

    def __init__(self) -> None:
        self._next = 0
        self._line_start = True

    def marker(self, entry: LogEntry) -> str:
        if entry.offset is None:
            return ""
        missed = entry.offset - self._next
        line_start = self._line_start
        self._next = entry.offset + len(entry.data.encode())
        self._line_start = entry.data.endswith("\n") if entry.data else line_start
        if missed <= 0:
            return ""
        return truncation_marker(missed) if line_start else "\n" + truncation_marker(missed)

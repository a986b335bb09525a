"""Live run output through Redis Streams: the worker appends, WatchRun reads.

Stream ``jobmesh:runlog:{run}`` holds entries ``{k: out|err|status|end, d: data}``
(the worker appends them in Lua scripts, a batch of runs per round trip); it is capped
and expires, since the database keeps the captured tails for good.

The cap is on bytes, whatever a script prints: an output entry also carries ``o``, the
offset of its first byte in the run's output (bytes dropped before it included), and
the append keeps only entries within the last ``LIVE_CAP_BYTES`` of output. A reader
that finds an entry further on than the end of the previous one knows how much it
missed (``Continuity``) and says so with ``truncation_marker``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from core import keys

MAX_ENTRIES = 5000
TTL_SECONDS = 3600
OUT, ERR, STATUS, END = "out", "err", "status", "end"
# The live output a run's stream keeps (its newest bytes; older ones are dropped), and
# the most one entry holds: the tail kept is between the two caps' difference and the
# cap. An entry of 60 KiB fits Redis's 64 KiB allocation (64 KiB would take 80).
LIVE_CAP_BYTES = 1024 * 1024
MAX_ENTRY_BYTES = 60 * 1024


@dataclass(frozen=True)
class LogEntry:
    id: str
    kind: str
    data: str
    offset: int | None = None  # output entries: where ``data`` starts in the run's output


# Live output of a batch of runs, one round trip. KEYS: each run's live log; ARGV: ttl,
# max entries, max bytes of output kept, then per run: how many entries, how many bytes
# of its output the worker dropped before the first, then each entry's kind and text.
# Each entry gets 'o', the offset of its text in the run's output, following on from
# the log's newest entry that has one; then the oldest entries go until every output
# entry left lies within the newest max bytes of output (an entry partly older goes
# whole, with the status entries before it) and the log holds at most max entries.
APPEND_LOGS = """
local function field(entry, name)
  local f = entry[2]
  for j = 1, #f, 2 do
    if f[j] == name then return f[j + 1] end
  end
  return nil
end
local function output_end(key)
  local before, count = '+', 1
  while true do
    local page = redis.call('XREVRANGE', key, before, '-', 'COUNT', count)
    if #page == 0 then return 0 end
    for _, e in ipairs(page) do
      local o = field(e, 'o')
      if o then return tonumber(o) + #field(e, 'd') end
    end
    before = '(' .. page[#page][1]
    count = math.min(count * 2, 64)
  end
end
local function trim(key, cutoff)
  local keep, dropping, after, count = nil, false, '-', 2
  while true do
    local page = redis.call('XRANGE', key, after, '+', 'COUNT', count)
    for _, e in ipairs(page) do
      local o = field(e, 'o')
      if o and tonumber(o) < cutoff then
        dropping, keep = true, nil
      else
        keep = keep or e[1]
        if o then
          if dropping then redis.call('XTRIM', key, 'MINID', keep) end
          return
        end
      end
    end
    if #page < count then break end
    after = '(' .. page[#page][1]
    count = math.min(count * 2, 64)
  end
  if dropping then
    if keep then redis.call('XTRIM', key, 'MINID', keep) else redis.call('XTRIM', key, 'MAXLEN', 0) end
  end
end
local max_entries, cap = ARGV[2], tonumber(ARGV[3])
local at = 4
for i = 1, #KEYS do
  local n = tonumber(ARGV[at])
  local offset = output_end(KEYS[i]) + tonumber(ARGV[at + 1])
  for j = 1, n do
    local text = ARGV[at + 2 * j + 1]
    redis.call('XADD', KEYS[i], 'MAXLEN', max_entries, '*', 'k', ARGV[at + 2 * j], 'd', text, 'o', offset)
    offset = offset + #text
  end
  if offset > cap then trim(KEYS[i], offset - cap) end
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  at = at + 2 + 2 * n
end
"""


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


async def read(redis: Redis, run_id: str, after: str, block_ms: int | None) -> list[LogEntry]:
    key = keys.run_log_channel(run_id)
    result: Any = await redis.xread({key: after}, count=500, block=block_ms)
    out: list[LogEntry] = []
    for _, entries in result or []:
        for entry_id, fields in entries:
            kind = fields.get(b"k", b"").decode()
            data = fields.get(b"d", b"").decode(errors="replace")
            offset = int(fields[b"o"]) if b"o" in fields else None
            out.append(
                LogEntry(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id), kind, data, offset)
            )
    return out

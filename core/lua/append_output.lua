-- append_output: the live output of a batch of runs.
--
-- KEYS[1..]  log...       jobmesh:{q:<queue>}:runlog:<run>, each run's live log
-- ARGV[1]    ttl          seconds each live log lives on after this
-- ARGV[2]    max_entries  the most entries a live log keeps
-- ARGV[3]    cap          the most bytes of output a live log keeps (its newest)
-- ARGV[4..]  run...       per run, in the order of KEYS: how many entries (n), how
--                         many bytes of its output the worker dropped before the
--                         first, then n times an entry's kind (out|err) and text
--
-- Each entry gets 'o', the offset of its text in the run's output, following on from
-- the log's newest entry that has one; then the oldest entries go until every output
-- entry left lies within the newest cap bytes of output (an entry partly older goes
-- whole, with the status entries before it) and the log holds at most max_entries.

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

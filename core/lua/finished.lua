-- finished: the Redis side of a batch of results a worker has written.
--
-- KEYS[1]    processing   jobmesh:processing:{worker}, the worker's processing list
-- KEYS[2]    inflight     jobmesh:inflight, run id -> push time
-- KEYS[3..]  log...       jobmesh:runlog:{run}, each run's live log
-- ARGV[1]    ttl          seconds each live log lives on after this
-- ARGV[2]    max_entries  the entries a live log keeps (approximately: MAXLEN ~)
-- ARGV[3]    kind         the kind of the entry appended (end)
-- ARGV[4..]  run...       per run, in the order of KEYS[3..], three values: its final
--                         status (the end entry's text), its queue message, its id
--
-- Ends each run's live log, takes its message off the processing list and its id
-- out of the in-flight set.

for i = 3, #KEYS do
  local at = 4 + (i - 3) * 3
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[3], 'd', ARGV[at])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  redis.call('LREM', KEYS[1], 1, ARGV[at + 1])
  redis.call('ZREM', KEYS[2], ARGV[at + 2])
end

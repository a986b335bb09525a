-- finished: the Redis side of a batch of results a worker has written.
--
-- KEYS[1..]  run...       per run, three keys of its queue's slot:
--                         jobmesh:{q:<queue>}:processing:<worker> (the worker's list),
--                         jobmesh:{q:<queue>}:inflight (run id -> push time),
--                         jobmesh:{q:<queue>}:runlog:<run> (its live log)
-- ARGV[1]    ttl          seconds each live log lives on after this
-- ARGV[2]    max_entries  the entries a live log keeps (approximately: MAXLEN ~)
-- ARGV[3]    kind         the kind of the entry appended (end)
-- ARGV[4..]  result...    per run, in the order of KEYS, three values: its final
--                         status (the end entry's text), its queue message, its id
--
-- Ends each run's live log, takes its message off the processing list and its id
-- out of the in-flight set.

for i = 1, #KEYS, 3 do
  local at = 4 + (i - 1)
  redis.call('XADD', KEYS[i + 2], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[3], 'd', ARGV[at])
  redis.call('EXPIRE', KEYS[i + 2], ARGV[1])
  redis.call('LREM', KEYS[i], 1, ARGV[at + 1])
  redis.call('ZREM', KEYS[i + 1], ARGV[at + 2])
end

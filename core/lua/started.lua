-- started: the Redis side of a batch of runs a worker has just taken (started).
--
-- KEYS[1..]  run...       per run, two keys of its queue's slot: jobmesh:{q:<queue>}:cancel:<run>
--                         (its cancel flag), then jobmesh:{q:<queue>}:runlog:<run> (its live log)
-- ARGV[1]    ttl          seconds each live log lives on after this
-- ARGV[2]    max_entries  the entries a live log keeps (approximately: MAXLEN ~)
-- ARGV[3]    kind         the kind of the entry appended (status)
-- ARGV[4]    text         its text (the status the runs now have)
--
-- Appends the status entry to each run's live log. Returns each run's cancel flag
-- (1: a cancel was requested before the start), in KEYS order.

local flags = {}
for i = 1, #KEYS, 2 do
  flags[#flags + 1] = redis.call('EXISTS', KEYS[i])
  redis.call('XADD', KEYS[i + 1], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[3], 'd', ARGV[4])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
end
return flags

-- pop_many: up to a count of messages off a queue, into a worker's processing list.
--
-- KEYS[1]    queue        jobmesh:{q:<queue>}:queue, taken from its RIGHT (consuming) end
-- KEYS[2]    processing   jobmesh:{q:<queue>}:processing:<worker>, put on its LEFT end
-- ARGV[1]    count        how many to take at most
--
-- Returns the messages taken, oldest first. Each move is an LMOVE: a message is
-- always in exactly one of the two lists.

local out = {}
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not m then break end
  out[#out + 1] = m
end
return out

-- requeue: messages from a worker's processing lists back onto their queues. Used
-- alike by a worker giving back a run it did not start and by the reaper emptying
-- the lists of a worker that stopped heartbeating.
--
-- KEYS[1..]  move...      per message, in the order of ARGV, two keys of its queue's
--                         slot: jobmesh:{q:<queue>}:processing:<worker> (the list it
--                         leaves), then jobmesh:{q:<queue>}:queue (its queue)
-- ARGV[1..]  message...   the messages, as the processing lists hold them
--
-- A message still in its processing list is removed from it (LREM from its LEFT
-- end: given in the list's order, newest first, each is found at once) and put on
-- its queue's consuming end, next to be taken (so the oldest of a list is taken
-- first); a message no longer there (finished, or moved already) is left alone, so
-- a message is always in exactly one of the lists and never on a queue twice.
-- Returns how many moved.

local moved = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[2 * i - 1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2 * i], ARGV[i])
    moved = moved + 1
  end
end
return moved

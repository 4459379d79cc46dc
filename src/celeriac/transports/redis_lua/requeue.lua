-- Give held messages back to the head of their queues (RPUSH: the consumer end).
-- KEYS[1] unacked hash, KEYS[2] unacked_index zset, KEYS[2 + i] the list for message i.
-- ARGV[2i - 1] delivery tag i, ARGV[2i] envelope i (marked redelivered).
-- A message whose lease is gone (acked, or restored by someone else) is skipped, so it is
-- never queued twice. Returns how many were pushed.
local pushed = 0
for i = 1, #KEYS - 2 do
    local tag = ARGV[2 * i - 1]
    redis.call('ZREM', KEYS[2], tag)
    if redis.call('HDEL', KEYS[1], tag) == 1 then
        redis.call('RPUSH', KEYS[2 + i], ARGV[2 * i])
        pushed = pushed + 1
    end
end
return pushed

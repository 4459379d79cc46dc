-- Move parked messages whose due time has come back to the head of their lists.
-- KEYS[1] parked zset (member = tag .. sep .. list key), KEYS[2] parked hash (tag -> envelope).
-- ARGV[1] now, ARGV[2] most to move in this call, ARGV[3] separator.
-- Returns how many were moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
    redis.call('ZREM', KEYS[1], member)
    local at = string.find(member, ARGV[3], 1, true)
    if at then
        local tag = string.sub(member, 1, at - 1)
        local list = string.sub(member, at + #ARGV[3])
        local env = redis.call('HGET', KEYS[2], tag)
        if env then
            redis.call('HDEL', KEYS[2], tag)
            redis.call('RPUSH', list, env)
            moved = moved + 1
        end
    end
end
return moved

-- Give an expired lease's message back to its queue(s), only if the lease is still expired.
-- KEYS[1] unacked hash, KEYS[2] unacked_index zset, KEYS[3..] lists to push to (head end).
-- ARGV[1] delivery tag, ARGV[2] cutoff: restore only when the lease score <= cutoff,
-- ARGV[3] the envelope to push (already marked redelivered), '' to only drop the entry.
-- Returns 1 when the message was pushed back, 0 otherwise.
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
    return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 or ARGV[3] == '' then
    return 0
end
for i = 3, #KEYS do
    redis.call('RPUSH', KEYS[i], ARGV[3])
end
return 1

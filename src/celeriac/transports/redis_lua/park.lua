-- Release a held message and park it until a due time, atomically.
-- KEYS[1] unacked hash, KEYS[2] unacked_index zset, KEYS[3] parked zset, KEYS[4] parked hash.
-- ARGV[1] delivery tag, ARGV[2] due (unix seconds), ARGV[3] list to return it to,
-- ARGV[4] the envelope, ARGV[5] separator between tag and list in the zset member.
-- Returns 1 when parked, 0 when the lease was already gone.
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1] .. ARGV[5] .. ARGV[3])
return 1

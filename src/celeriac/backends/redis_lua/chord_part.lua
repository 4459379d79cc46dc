-- Record one chord header result and, when it completes the chord, claim the right to send the
-- body, in one atomic step. Same keys and meaning as Celery 5.7's Redis backend, so Celery and
-- celeriac workers can finish the same chord and exactly one of them sends the body.
--
-- KEYS: [1] .j results (zset scored by header index, or list), [2] .t extra size, [3] .s size,
--       [4] .d seen "<task id>:<index>" set, [5] the group's meta key, [6] .c claim.
-- ARGV: [1] task id, [2] member (JSON [1, task id, state, result]), [3] '1' for the zset form,
--       [4] header index, [5] seconds to keep chord keys (0 = no expiry),
--       [6] seconds to keep the group meta key, [7] claim seconds, [8] claim token.
-- Returns {-1, 0} once the chord is done; else {ready count, claimed (0/1), members...} where
-- members (in index order) are only returned to the claimer.
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, index = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])

if redis.call('GET', ckey) == 'done' then
    return {-1, 0}
end

-- A redelivered header task reports the same (task id, index) again: count it once.
local seen = tid .. ':' .. index
if redis.call('SISMEMBER', dkey, seen) == 0 then
    if ordered then
        redis.call('ZADD', jkey, index, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, seen)
end

local ready
if ordered then
    ready = redis.call('ZCARD', jkey)
else
    ready = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end

local size = redis.call('GET', skey)
local extra = tonumber(redis.call('GET', tkey) or '0') or 0
local out = {ready, 0}
if size and ready == tonumber(size) + extra then
    if redis.call('SET', ckey, ARGV[8], 'NX', 'EX', tonumber(ARGV[7])) then
        out[2] = 1
        local members
        if ordered then
            members = redis.call('ZRANGE', jkey, 0, -1)
        else
            members = redis.call('LRANGE', jkey, 0, -1)
        end
        for _, m in ipairs(members) do
            out[#out + 1] = m
        end
    end
end
return out

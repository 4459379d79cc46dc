-- Claim one run of a schedule entry: compare-and-set on the entry's version.
-- KEYS[1] state hash; ARGV[1] entry name; ARGV[2] version the caller read (0: none);
-- ARGV[3] the new state as JSON (its "v" is ARGV[2] + 1).
-- Returns 1 when claimed, 0 when another process claimed first.
local current = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if current then
    version = tonumber(cjson.decode(current)['v']) or 0
end
if version ~= tonumber(ARGV[2]) then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1

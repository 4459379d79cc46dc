-- Store a result and announce it on the channel of the same name, atomically, in one round trip.
-- KEYS[1]: the key. ARGV[1]: the value. ARGV[2]: time to live in milliseconds (0: none).
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1

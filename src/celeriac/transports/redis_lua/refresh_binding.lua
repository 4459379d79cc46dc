-- Bind a queue that expires: add member ARGV[1] to binding table KEYS[1] and push exchange
-- ARGV[2]'s deadline in KEYS[2] (kombu 5.7's _kombu.binding_deadlines) to ARGV[3] ms from now,
-- by the server's clock. kombu sweeps tables whose deadline passed.
redis.call('SADD', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
return 1

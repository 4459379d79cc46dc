-- Take one entry ARGV[1] out of the dead-letter list KEYS[1] and queue envelope ARGV[2] on
-- list KEYS[2] (tail end, like a new publish). Returns 1 if the entry was still there.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[2])
    return 1
end
return 0

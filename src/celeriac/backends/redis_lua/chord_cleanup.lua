-- Drop a finished chord's counting keys and mark it done, so a late duplicate of a header task
-- cannot count again or send the body twice (Celery 5.7's semantics).
-- KEYS: [1] .c claim, [2] .j, [3] .t, [4] .s, [5] .d.
-- ARGV: [1] our claim token, or '' to clean up whoever holds the claim; [2] seconds to keep "done".
-- Returns 1 when cleaned, 0 when another worker holds the claim.
local holder = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and holder and holder ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
return 1

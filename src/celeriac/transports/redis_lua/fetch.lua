-- Pop up to ARGV[1] messages from the candidate lists and record each one as unacked, in one
-- atomic step, so no crash between the pop and the bookkeeping can lose a message.
--
-- KEYS[1] unacked hash, KEYS[2] unacked_index zset, KEYS[3] dead-letter list,
-- KEYS[4] the fetcher's record: what its last fetch leased, so a fetch whose reply was lost
-- (the connection dropped after the script ran) is salvaged rather than left to lease expiry,
-- KEYS[4 + k] candidate list k (1-based), step-major: k = step * nq + q for step 0.. and queue q 1..nq.
-- ARGV[1] limit, ARGV[2] now (lease score, unix seconds), ARGV[3] nq,
-- ARGV[4] '1' to move a queue to the end of the order after it gave a message (round robin),
-- ARGV[5] this fetch's token, ARGV[6] the record's time to live (seconds),
-- ARGV[7], ARGV[8] (optional) a message already popped by BRPOP and its candidate index k.
--
-- Returns {order, k1, raw1, tag1, k2, raw2, tag2, ...}; order is the final queue order,
-- comma-separated 1-based queue numbers. When it leased anything, the record holds the JSON
-- [token, k1, tag1, k2, tag2, ...].
local unacked, index, dlq, record_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit = tonumber(ARGV[1])
local now = ARGV[2]
local nq = tonumber(ARGV[3])
local rotate = ARGV[4] == '1'
local nsteps = (#KEYS - 4) / nq
local leased = {ARGV[5]}

local order = {}
for q = 1, nq do order[q] = q end
local empty = {}
local out = {''}
local count = 0

local function to_end(q)
    if not rotate then return end
    for pos = 1, #order do
        if order[pos] == q then
            table.remove(order, pos)
            order[#order + 1] = q
            return
        end
    end
end

-- The string value of JSON key *key* in *raw* when the key occurs exactly once and its value
-- holds no escapes; else nil. The envelopes kombu and celeriac write hold each key read here
-- once, under properties: a second occurrence is a look-alike in a header, and the caller then
-- decodes the envelope in full.
local function sole_string(raw, key)
    local quoted = '"' .. key .. '"'
    local at = string.find(raw, quoted, 1, true)
    if not at or string.find(raw, quoted, at + #quoted, true) then return nil end
    return string.match(raw, '^%s*:%s*"([^"\\]*)"', at + #quoted)
end

-- Fast path: read the three fields straight from the text, without decoding the whole
-- envelope (most of this script's cost otherwise). The worker still parses every envelope
-- it fetches and dead-letters one that is not valid JSON.
local function fields(raw)
    if string.sub(raw, 1, 1) ~= '{' then return nil end
    local tag = sole_string(raw, 'delivery_tag')
    local ex = sole_string(raw, 'exchange')
    local rk = sole_string(raw, 'routing_key')
    if tag and tag ~= '' and ex and rk then return tag, ex, rk end
    return nil
end

local function record(raw, k, tag, ex, rk)
    -- kombu's format: JSON [envelope, exchange, routing_key], keyed by delivery tag.
    redis.call('HSET', unacked, tag,
        '[' .. raw .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
    redis.call('ZADD', index, now, tag)
    count = count + 1
    leased[#leased + 1] = k
    leased[#leased + 1] = tag
    out[#out + 1] = k
    out[#out + 1] = raw
    out[#out + 1] = tag
end

local function adopt(raw, k)
    local tag, ex, rk = fields(raw)
    if tag then
        record(raw, k, tag, ex, rk)
        return
    end
    local ok, env = pcall(cjson.decode, raw)
    if not ok or type(env) ~= 'table' or type(env.properties) ~= 'table' then
        redis.call('RPUSH', dlq, cjson.encode({
            id = redis.sha1hex(raw .. now), queue = KEYS[4 + k],
            reason = 'undecodable message envelope', time = tonumber(now), envelope = raw}))
        return
    end
    local props = env.properties
    local tag = props.delivery_tag
    if type(tag) ~= 'string' or tag == '' then
        tag = 'celeriac-' .. redis.sha1hex(raw .. now .. count)
    end
    local ex, rk = '', ''
    local info = props.delivery_info
    if type(info) == 'table' then
        if type(info.exchange) == 'string' then ex = info.exchange end
        if type(info.routing_key) == 'string' then rk = info.routing_key end
    end
    record(raw, k, tag, ex, rk)
end

local function pop_one()
    for step = 0, nsteps - 1 do
        for pos = 1, #order do
            local q = order[pos]
            local k = step * nq + q
            if not empty[k] then
                local raw = redis.call('RPOP', KEYS[4 + k])
                if raw then
                    to_end(q)
                    return raw, k
                end
                empty[k] = true
            end
        end
    end
    return nil, nil
end

if ARGV[7] then
    local k = tonumber(ARGV[8])
    adopt(ARGV[7], k)
    to_end(((k - 1) % nq) + 1)
end
while count < limit do
    local raw, k = pop_one()
    if not raw then break end
    adopt(raw, k)
end
if count > 0 then
    redis.call('SET', record_key, cjson.encode(leased), 'EX', ARGV[6])
end
out[1] = table.concat(order, ',')
return out

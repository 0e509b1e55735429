-- Many ticketed admissions in one pool, in order, each as admit.lua would
-- answer it. KEYS: pool, in-flight zset, in-flight hash, then (only on a
-- single Redis server, where keys of any slot may meet in one script) each
-- admission's ticket key, in the order of the admissions.
-- ARGV: REMAINING, IN_FLIGHT, the pending mark's lifetime in ms (0: the
-- caller marks the tickets itself), then per admission: holder, units,
-- limit, ticket.
-- Returns {code, remaining} per admission, flattened; {3} when the pool is missing.
local remaining = redis.call('HGET', KEYS[1], ARGV[1])
if not remaining then return {3} end
remaining = tonumber(remaining)
local mark_ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local held = {}
local taken = 0
local out = {}
for i = 4, #ARGV, 4 do
  local holder, units, limit, ticket = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  local field = 'u:' .. holder
  local code = 0
  if redis.call('ZSCORE', KEYS[2], ticket) then
    code = 4
  else
    local h = held[field] or tonumber(redis.call('HGET', KEYS[1], field) or '0')
    if h + units > limit then
      code = 1
    elseif remaining < units then
      code = 2
    else
      remaining = remaining - units
      taken = taken + units
      held[field] = h + units
      redis.call('HINCRBY', KEYS[1], field, units)
      redis.call('ZADD', KEYS[2], now, ticket)
      redis.call('HSET', KEYS[3], ticket, units .. ':' .. holder)
      if mark_ttl > 0 then
        redis.call('SET', KEYS[3 + (i - 4) / 4 + 1], '1', 'PX', mark_ttl)
      end
    end
  end
  out[#out + 1] = code
  out[#out + 1] = remaining
end
if taken > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -taken)
  redis.call('HINCRBY', KEYS[1], ARGV[2], taken)
end
return out

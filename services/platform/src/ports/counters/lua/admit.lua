-- One admission. KEYS: pool, in-flight zset, in-flight hash, then (only on
-- a single Redis server, with a ticket) the ticket's pending-mark key.
-- ARGV: REMAINING, holder field, units, limit, '1' with a ticket, ticket,
-- holder, IN_FLIGHT, the pending mark's lifetime in ms (0: the caller marks
-- the ticket itself). Returns {code, remaining}.
local remaining = redis.call('HGET', KEYS[1], ARGV[1])
if not remaining then return {3, 0} end
if ARGV[5] == '1' and redis.call('ZSCORE', KEYS[2], ARGV[6]) then
  return {4, tonumber(remaining)}
end
local units = tonumber(ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if held + units > tonumber(ARGV[4]) then return {1, tonumber(remaining)} end
if tonumber(remaining) < units then return {2, tonumber(remaining)} end
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -units)
redis.call('HINCRBY', KEYS[1], ARGV[2], units)
if ARGV[5] == '1' then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[6])
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[3] .. ':' .. ARGV[7])
  redis.call('HINCRBY', KEYS[1], ARGV[8], units)
  if tonumber(ARGV[9]) > 0 then
    redis.call('SET', KEYS[4], '1', 'PX', ARGV[9])
  end
end
return {0, left}

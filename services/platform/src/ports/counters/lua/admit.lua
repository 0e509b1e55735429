local remaining = redis.call('HGET', KEYS[1], ARGV[1])
if not remaining then return {3, 0} end
local units = tonumber(ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if held + units > tonumber(ARGV[4]) then return {1, tonumber(remaining)} end
if tonumber(remaining) < units then return {2, tonumber(remaining)} end
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -units)
redis.call('HINCRBY', KEYS[1], ARGV[2], units)
if ARGV[5] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[6])
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[7])
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[3] .. ':' .. ARGV[8])
  redis.call('HINCRBY', KEYS[1], ARGV[9], units)
end
return {0, left}

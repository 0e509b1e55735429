local remaining = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if remaining <= 0 then
  return {0, '', tonumber(redis.call('HGET', KEYS[1], ARGV[6]) or '0')}
end
local k = math.min(remaining, math.max(tonumber(ARGV[3]), math.ceil(remaining / 2)))
redis.call('HINCRBY', KEYS[1], ARGV[1], -k)
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], k .. ':')
redis.call('HINCRBY', KEYS[1], ARGV[4], k)
local moving = redis.call('HINCRBY', KEYS[1], ARGV[6], k)
return {k, redis.call('HGET', KEYS[1], ARGV[5]) or '', moving}

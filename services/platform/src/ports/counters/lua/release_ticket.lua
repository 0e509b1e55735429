if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local v = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if not v then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return 0 end
local sep = string.find(v, ':', 1, true)
local units = tonumber(string.sub(v, 1, sep - 1))
redis.call('HINCRBY', KEYS[1], ARGV[2], units)
redis.call('HINCRBY', KEYS[1], ARGV[3], -units)
if sep == #v then
  redis.call('HINCRBY', KEYS[1], ARGV[4], -units)
else
  local holder = 'u:' .. string.sub(v, sep + 1)
  local held = redis.call('HINCRBY', KEYS[1], holder, -units)
  if held <= 0 then redis.call('HDEL', KEYS[1], holder) end
end
return 1

if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if KEYS[2] and not redis.call('SET', KEYS[2], 'released', 'NX', 'PX', ARGV[4]) then return 2 end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
local held = redis.call('HINCRBY', KEYS[1], ARGV[2], -tonumber(ARGV[3]))
if held <= 0 then redis.call('HDEL', KEYS[1], ARGV[2]) end
return 1

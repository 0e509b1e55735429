local mark = redis.call('GET', KEYS[2])
if mark == 'received' then return 1 end
if mark == 'cancelled' then return 2 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 3 end
if (redis.call('HGET', KEYS[1], ARGV[5]) or '') ~= ARGV[3] then return 3 end
redis.call('SET', KEYS[2], 'received', 'PX', ARGV[4])
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
return 1

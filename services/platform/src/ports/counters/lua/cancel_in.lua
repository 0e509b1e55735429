if redis.call('GET', KEYS[1]) == 'received' then return 1 end
redis.call('SET', KEYS[1], 'cancelled', 'PX', ARGV[1])
return 0

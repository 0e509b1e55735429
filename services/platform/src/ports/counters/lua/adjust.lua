if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])

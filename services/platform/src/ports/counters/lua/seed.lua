if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('RENAME', KEYS[2], KEYS[1])
return 1

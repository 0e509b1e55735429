local done = 0
for i = 2, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    local v = redis.call('HGET', KEYS[3], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    if v and redis.call('EXISTS', KEYS[1]) == 1 then
      local units = tonumber(string.sub(v, 1, string.find(v, ':', 1, true) - 1))
      redis.call('HINCRBY', KEYS[1], ARGV[1], -units)
    end
    done = done + 1
  end
end
return done

local done = 0
local pool_exists = redis.call('EXISTS', KEYS[1]) == 1
for i = 3, #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    local v = redis.call('HGET', KEYS[3], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    if v and pool_exists then
      local sep = string.find(v, ':', 1, true)
      local units = tonumber(string.sub(v, 1, sep - 1))
      redis.call('HINCRBY', KEYS[1], ARGV[1], -units)
      if sep == #v then redis.call('HINCRBY', KEYS[1], ARGV[2], -units) end
    end
    done = done + 1
  end
end
-- On a single server the tickets' pending marks come as KEYS[4..] and go here.
if #KEYS > 3 then redis.call('UNLINK', unpack(KEYS, 4)) end
return done

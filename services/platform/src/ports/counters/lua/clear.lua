-- Clears the tickets of decided requests. KEYS: pool, in-flight zset,
-- in-flight hash, then (only on a single Redis server) the tickets'
-- pending-mark keys. ARGV: IN_FLIGHT, TRANSIT, then the tickets.
-- A ticket still in flight leaves the zset and the hash, and its units
-- leave IN_FLIGHT (and TRANSIT, for a transfer's entry, "units:") while
-- the pool exists. Returns how many were in flight.
--
-- One HMGET reads every ticket's entry and one call per structure removes
-- them (the zset and hash hold the same tickets, see admit_many.lua).
local gone, seen = {}, {}
local in_flight, transit = 0, 0
if #ARGV > 2 then
  local entries = redis.call('HMGET', KEYS[3], unpack(ARGV, 3))
  for j = 1, #ARGV - 2 do
    local ticket, v = ARGV[j + 2], entries[j]
    if v and not seen[ticket] then
      seen[ticket] = true
      gone[#gone + 1] = ticket
      local sep = string.find(v, ':', 1, true)
      local units = tonumber(string.sub(v, 1, sep - 1))
      in_flight = in_flight + units
      if sep == #v then transit = transit + units end
    end
  end
end
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[3], unpack(gone))
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[1], -in_flight)
    if transit > 0 then redis.call('HINCRBY', KEYS[1], ARGV[2], -transit) end
  end
end
-- On a single server the tickets' pending marks come as KEYS[4..] and go here.
if #KEYS > 3 then redis.call('UNLINK', unpack(KEYS, 4)) end
return #gone

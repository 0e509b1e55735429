-- Many ticketed admissions in one pool, in order, each as admit.lua would
-- answer it. KEYS: pool, in-flight zset, in-flight hash, then (only on a
-- single Redis server, where keys of any slot may meet in one script) each
-- admission's ticket key, in the order of the admissions.
-- ARGV: REMAINING, IN_FLIGHT, the pending mark's lifetime in ms (0: the
-- caller marks the tickets itself), then per admission: holder, units,
-- limit, ticket.
-- Returns {code, remaining} per admission, flattened; {3} when the pool is missing.
--
-- Each call into Redis costs more than the work it does, so the step reads
-- every ticket's in-flight entry and every holder's count in one HMGET
-- each, decides the admissions in Lua, and writes what they changed in one
-- call per structure. The in-flight zset and hash always hold the same
-- tickets (every script adds and removes them together), so the hash
-- answers "already in flight" as the zset would.
local remaining = redis.call('HGET', KEYS[1], ARGV[1])
if not remaining then return {3} end
remaining = tonumber(remaining)
local mark_ttl = tonumber(ARGV[3])
local n = (#ARGV - 3) / 4
local tickets, fields = {}, {}
for j = 1, n do
  local i = 4 * j
  fields[j] = 'u:' .. ARGV[i]
  tickets[j] = ARGV[i + 3]
end
local flying = redis.call('HMGET', KEYS[3], unpack(tickets))
local counts = redis.call('HMGET', KEYS[1], unpack(fields))
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local held, admitted = {}, {}
local members, entries = {}, {}
local taken = 0
local out = {}
for j = 1, n do
  local i = 4 * j
  local holder, units, limit, ticket = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tickets[j]
  local field = fields[j]
  local code = 0
  if flying[j] or admitted[ticket] then
    code = 4
  else
    local h = held[field] or tonumber(counts[j] or '0')
    if h + units > limit then
      code = 1
    elseif remaining < units then
      code = 2
    else
      remaining = remaining - units
      taken = taken + units
      held[field] = h + units
      admitted[ticket] = true
      members[#members + 1] = now
      members[#members + 1] = ticket
      entries[#entries + 1] = ticket
      entries[#entries + 1] = units .. ':' .. holder
      if mark_ttl > 0 then
        redis.call('SET', KEYS[3 + j], '1', 'PX', mark_ttl)
      end
    end
  end
  out[#out + 1] = code
  out[#out + 1] = remaining
end
if taken > 0 then
  local counted = {}
  for field, h in pairs(held) do
    counted[#counted + 1] = field
    counted[#counted + 1] = string.format('%d', h)
  end
  redis.call('HSET', KEYS[1], unpack(counted))
  redis.call('HINCRBY', KEYS[1], ARGV[1], -taken)
  redis.call('HINCRBY', KEYS[1], ARGV[2], taken)
  redis.call('ZADD', KEYS[2], unpack(members))
  redis.call('HSET', KEYS[3], unpack(entries))
end
return out

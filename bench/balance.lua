-- wrk script: GET a different user's balance on every request, so every
-- read misses the cache and goes to the database (the miss path).
-- Usage: wrk -t2 -c8 -d10s -s bench/balance.lua http://127.0.0.1:8080
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tag", tostring(threads) .. "-" .. tostring(os.time()))
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/users/u" .. tag .. "-" .. n .. "/points")
end

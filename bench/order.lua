-- wrk script: POST a one-unit order with a distinct userId each time.
-- Usage: wrk -t2 -c64 -d10s -s bench/order.lua http://127.0.0.1:8080/v1/time-sales/<sale>/orders
-- Threads are numbered in setup() so user ids never collide across threads.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tag", tostring(threads) .. "-" .. tostring(os.time()))
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"userId":"u' .. tag .. '-' .. n .. '","quantity":1}')
end

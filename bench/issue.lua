-- wrk script: POST an issue request with a distinct userId each time.
-- Usage: wrk -t2 -c64 -d10s -s bench/issue.lua http://127.0.0.1:8080/v1/campaigns/<c>/issue
-- Each wrk thread has its own Lua state; setup() numbers them so user ids
-- never collide across threads (math.random is unseeded and would).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tag", tostring(threads) .. "-" .. tostring(os.time()))
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"userId":"u' .. tag .. '-' .. n .. '"}')
end

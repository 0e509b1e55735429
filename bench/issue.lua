-- wrk script: POST an issue request with a distinct userId each time.
-- Usage: wrk -t2 -c64 -d10s -s bench/issue.lua http://127.0.0.1:8080/v1/campaigns/<c>/issue
local thread_tag = tostring(math.random(1, 1e9))
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"userId":"u' .. thread_tag .. '-' .. n .. '"}')
end
local statuses = {}
response = function(status)
  statuses[status] = (statuses[status] or 0) + 1
end

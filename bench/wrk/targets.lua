-- wrk script for the posd benchmark: each request goes to a random line of
-- a targets file (the first script argument). A line is
--   PATH <TAB> TOKEN [<TAB> JSON BODY]
-- A line with a body is a POST with a fresh Idempotency-Key.
-- done() prints one line, BENCHJSON {...}, that bench/sections.py reads.

local counter = 0
local targets = {}
local prefix = ""

function setup(thread)
  thread_ids = (thread_ids or 0) + 1
  thread:set("thread_id", thread_ids)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local path, token, body = line:match("^([^\t]+)\t([^\t]*)\t?(.*)$")
    if path then
      targets[#targets + 1] = { path = path, auth = "Bearer " .. token, body = body }
    end
  end
  f:close()
  assert(#targets > 0, "no targets in " .. args[1])
  math.randomseed(os.time() * 1000 + (thread_id or 0))
  prefix = string.format("wrk-%x-%d-%x-", os.time(), thread_id or 0, math.random(0, 0x7fffffff))
end

function request()
  local t = targets[math.random(#targets)]
  if t.body ~= "" then
    counter = counter + 1
    return wrk.format("POST", t.path, {
      ["Authorization"] = t.auth,
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = prefix .. counter,
    }, t.body)
  end
  return wrk.format("GET", t.path, { ["Authorization"] = t.auth })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end

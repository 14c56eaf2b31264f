-- wrk script for the posd benchmark: each request goes to a random line of
-- a targets file (the first script argument). A line is
--   PATH <TAB> TOKEN [<TAB> JSON BODY]
-- A line with a body is a POST with a fresh Idempotency-Key; each @UUID@ in
-- the body becomes a fresh UUID (offline bills' client ids).
-- done() prints one line, BENCHJSON {...}, that bench/sections.py reads.
-- With WRK_STATUS_COUNTS set in its environment, wrk also counts the
-- answers 503 apart from the other answers of 400 and above ("s503",
-- "s4xx5xx" in that line); without it, no response() callback is defined,
-- which spares wrk parsing every answer's headers for the script.

local counter = 0
local targets = {}
local prefix = ""
local threads = {}

function setup(thread)
  thread_ids = (thread_ids or 0) + 1
  thread:set("thread_id", thread_ids)
  threads[#threads + 1] = thread
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

local function fresh_uuid()
  counter = counter + 1
  return string.format("%08x-%04x-4%03x-8%03x-%012x", math.random(0, 0x7fffffff),
    (thread_id or 0) % 0x10000, math.random(0, 0xfff), math.random(0, 0xfff), counter)
end

function request()
  local t = targets[math.random(#targets)]
  if t.body ~= "" then
    counter = counter + 1
    local body = t.body
    if body:find("@UUID@", 1, true) then
      body = body:gsub("@UUID@", fresh_uuid)
    end
    return wrk.format("POST", t.path, {
      ["Authorization"] = t.auth,
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = prefix .. counter,
    }, body)
  end
  return wrk.format("GET", t.path, { ["Authorization"] = t.auth })
end

if os.getenv("WRK_STATUS_COUNTS") then
  s503 = 0
  sother = 0
  function response(status, headers, body)
    if status == 503 then
      s503 = s503 + 1
    elseif status >= 400 then
      sother = sother + 1
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local counts = ""
  if os.getenv("WRK_STATUS_COUNTS") then
    local n503, nother = 0, 0
    for _, t in ipairs(threads) do
      n503 = n503 + (t:get("s503") or 0)
      nother = nother + (t:get("sother") or 0)
    end
    counts = string.format(',"s503":%d,"s4xx5xx":%d', n503, nother)
  end
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d%s}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, counts))
end

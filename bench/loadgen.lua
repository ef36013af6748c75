-- wrk script for bench/loadgen.py: POST a random pre-built JSON body per request and report
-- one JSON line (requests, latency percentiles, non-2xx and 503 counts, socket errors).
-- Usage: wrk ... -s bench/loadgen.lua URL -- BODIES_FILE
local bodies = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    table.insert(bodies, line)
  end
  non2xx = 0
  overloaded = 0
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6) + #threads)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if status == 503 then
    overloaded = overloaded + 1
  end
end

function done(summary, latency, requests)
  local bad, busy = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    busy = busy + thread:get("overloaded")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, "overloaded_503": %d, ' ..
    '"socket_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad, busy,
    e.connect + e.read + e.write, e.timeout))
end

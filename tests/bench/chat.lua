-- A non-streaming chat completion; the key and model come from the environment,
-- and so may the message (BENCH_CONTENT). With BENCH_UNIQUE set, the message
-- differs on every request of every run (so a response cache misses each
-- time): each thread's Lua state is its own, `setup` numbers them, and the
-- run's start time tells runs apart.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local model = os.getenv("BENCH_MODEL")
local content = os.getenv("BENCH_CONTENT") or "benchmark me please"

local function body(text)
  return '{"model":"' .. model .. '","messages":[{"role":"user","content":"' .. text .. '"}]}'
end

if os.getenv("BENCH_UNIQUE") then
  local threads = 0
  setup = function(thread)
    threads = threads + 1
    thread:set("thread_id", threads)
  end

  local counter = 0
  local run = tostring(os.time())
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, body(content .. " " .. run .. "-" .. tostring(thread_id) .. "-" .. counter))
  end
else
  wrk.body = body(content)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f requests=%d p50_us=%d p99_us=%d p9999_us=%d max_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.99), latency.max,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

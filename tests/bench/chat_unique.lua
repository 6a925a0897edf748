-- A non-streaming chat completion whose message differs on every request of
-- every run (so a response cache misses each time); key and model from the
-- environment. Each thread's Lua state is its own: `setup` numbers them, and
-- the run's start time tells runs apart.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local model = os.getenv("BENCH_MODEL")
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local counter = 0
local run = tostring(os.time())

request = function()
  counter = counter + 1
  local body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"benchmark me please '
    .. run .. '-' .. tostring(thread_id) .. '-' .. counter .. '"}]}'
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f requests=%d p50_us=%d p99_us=%d p9999_us=%d max_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.99), latency.max,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

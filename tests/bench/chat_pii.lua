-- A non-streaming chat completion whose prompt holds personal data (an email,
-- a phone number, a card number); the key and model come from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.body = '{"model":"' .. os.getenv("BENCH_MODEL") .. '","messages":[{"role":"user","content":"mail me at ada@example.com or call +1 415-555-0100, card 4111 1111 1111 1111"}]}'

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f requests=%d p50_us=%d p99_us=%d p9999_us=%d max_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.99), latency.max,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

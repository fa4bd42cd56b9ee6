-- wrk script for bench/http-bench.sh: every request is a POST with a JSON body.
--
--   wrk ... -s bench/wrk/post.lua http://127.0.0.1:PORT/path -- '<json body>' ['<api key>']
--
-- The body is the first argument after `--` (empty when absent); the second, when given, is
-- sent as X-API-Key (the baseline ignores it, so both sides send the same bytes). At the end one
-- machine-readable line is printed for the driver script:
--   WRK_RESULT rps=<req/s> p50_us=<µs> p99_us=<µs> requests=<n> non2xx=<n> errors=<n>
--              p999_us=<µs> max_us=<µs>

local req

function init(args)
  -- Built once per thread; request() only hands the same bytes back.
  local headers = { ["Content-Type"] = "application/json" }
  if args[2] and args[2] ~= "" then
    headers["X-API-Key"] = args[2]
  end
  req = wrk.format("POST", nil, headers, args[1] or "")
end

function request()
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "WRK_RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d non2xx=%d errors=%d p999_us=%d max_us=%d\n",
    summary.requests / secs,
    latency:percentile(50),
    latency:percentile(99),
    summary.requests,
    e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(99.9),
    latency.max))
end

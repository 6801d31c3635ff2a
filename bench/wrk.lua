-- wrk script for bench/run.sh: a valid `POST /v1/conversations` (Flextell) with its
-- headers and body, read from the environment so bench/run.sh, bench/callgrind.sh and the
-- Python helpers send exactly the same request.
--
--   BENCH_BODY_VALID, BENCH_BODY_INVALID  the JSON bodies (the invalid one is a 422)
--   BENCH_TOKEN, BENCH_TENANT             the bearer token and X-Tenant value
--   BENCH_INVALID_EVERY                   0: every request valid; N: every Nth invalid
--
-- `done` prints one line `BENCH_RESULT {json}` that bench/report.py reads.

local valid = os.getenv("BENCH_BODY_VALID")
local invalid = os.getenv("BENCH_BODY_INVALID")
local every = tonumber(os.getenv("BENCH_INVALID_EVERY") or "0") or 0

wrk.method = "POST"
wrk.path = "/v1/conversations"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["X-Tenant"] = os.getenv("BENCH_TENANT")
wrk.body = valid

-- With no `request` function wrk sends one pre-built request (its fast path); the mixed
-- scenario needs one, and pre-builds both requests so the script stays cheap.
if every > 0 then
  local n = 0
  local good, bad
  init = function(args)
    good = wrk.format(nil, nil, nil, valid)
    bad = wrk.format(nil, nil, nil, invalid)
  end
  request = function()
    n = n + 1
    if n % every == 0 then
      return bad
    end
    return good
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end

-- wrk script for benches/http.sh: every request is a debit of 0.01 from a
-- random account among ACCOUNTS pre-opened ones, with a key of its own.
--
-- Keys are unique across threads and runs of one gateway: thread t's n-th
-- request has key t * 2^40 + n (exact in a double: below 2^53).
-- At the end, prints one machine-readable line:
--   RESULT requests=N elapsed=SECONDS non2xx=N errors=N p50_us=X p99_us=Y

local accounts = tonumber(os.getenv("ACCOUNTS") or "1000")
local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local key = string.format("%.0f", tid * 1099511627776 + counter)
  local account = math.random(1, accounts)
  wrk.headers["Idempotency-Key"] = key
  return wrk.format("POST", "/accounts/" .. account .. "/debits", nil, '{"amount":"0.01"}')
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    "RESULT requests=%d elapsed=%.3f non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration / 1e6, summary.errors.status, errors,
    latency:percentile(50), latency:percentile(99)))
end

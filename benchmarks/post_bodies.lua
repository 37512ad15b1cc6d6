-- wrk script of benchmarks/serve.py: POST /predict with JSON bodies read from a file (one body a line), each
-- connection's thread sending them in turn, and a JSON line of results at the end:
--   wrk -t2 -c64 -d10s --latency -s benchmarks/post_bodies.lua http://127.0.0.1:8000 -- bodies.jsonl

local requests = {}
local next_index = 1
local threads = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", "/predict", headers, line)
  end
  -- threads start at different bodies, so concurrent requests are not all the same picture
  next_index = (thread_number * 97) % #requests + 1
end

function request()
  local chosen = requests[next_index]
  next_index = next_index % #requests + 1
  return chosen
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

-- POST a ~1 KiB JSON body, alternating X-Amzn-SageMaker-Target-Container-Hostname between two
-- containers, and print one JSON line of results when done.
-- wrk.lua PATH TARGET_A TARGET_B BODY_BYTES
local path, a, b, size = "/invocations", "alpha", "beta", 1024
local counter = 0
local body

function init(args)
  path = args[1] or path
  a = args[2] or a
  b = args[3] or b
  size = tonumber(args[4] or size)
  body = '{"instances": [[' .. string.rep("0.5,", math.floor((size - 20) / 4)) .. '0.5]]}'
end

function request()
  counter = counter + 1
  local target = (counter % 2 == 0) and a or b
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["X-Amzn-SageMaker-Target-Container-Hostname"] = target,
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end

-- POST a JSON body of about BODY_BYTES, alternating X-Amzn-SageMaker-Target-Container-Hostname between
-- TARGET_A and TARGET_B, and print one JSON line of results (with a latency distribution) when done.
--   wrk ... -s bench/wrk.lua URL -- PATH TARGET_A TARGET_B BODY_BYTES (0: one 64-value row) [ENDPOINTS]
-- With ENDPOINTS, PATH holds a %d: each request goes to the next of endpoints 1..ENDPOINTS in turn.
local path, a, b, size, endpoints = "/invocations", "alpha", "beta", 1024, 0
local counter = 0
local body

function init(args)
  path = args[1] or path
  a = args[2] or a
  b = args[3] or b
  size = tonumber(args[4] or size)
  endpoints = tonumber(args[5] or endpoints)
  -- 0: exactly one row of 64 values, an 8x8 digit image (what the models of examples/ take)
  local values = (size == 0) and 64 or math.max(64, math.floor((size - 20) / 4))
  body = '{"instances": [[' .. string.rep("0.5,", values - 1) .. '0.5]]}'
end

function request()
  counter = counter + 1
  local target = (counter % 2 == 0) and a or b
  local headers = {["Content-Type"] = "application/json"}
  if target ~= "-" then  -- "-": no routing header (a Serial endpoint refuses one)
    headers["X-Amzn-SageMaker-Target-Container-Hostname"] = target
  end
  local target_path = path
  if endpoints > 0 then
    target_path = string.format(path, counter % endpoints + 1)
  end
  return wrk.format("POST", target_path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local points = {}
  for _, p in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97.5, 99, 99.5, 99.9}) do
    table.insert(points, string.format('[%s, %d]', p, latency:percentile(p)))
  end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, "p50_us": %d, "p99_us": %d, "cdf": [%s]}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), table.concat(points, ", ")))
end

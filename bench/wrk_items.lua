-- wrk script for bench/submit_load.py: POST pre-signed ANS-104 items, each exactly once, paced per connection.
--
-- Environment: WRK_ITEMS (file of items, each a 4-byte big-endian length then the bytes), WRK_PATH (the URL
-- path), WRK_THREADS (wrk -t), WRK_DELAY_MS (pause before each request on a connection: the pacing).
-- done() prints one JSON line: latency percentiles (microseconds), requests, statuses.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS"))
  local f = assert(io.open(os.getenv("WRK_ITEMS"), "rb"))
  local data = f:read("*a")
  f:close()
  items, next_item, path = {}, 0, os.getenv("WRK_PATH")
  delay_ms = tonumber(os.getenv("WRK_DELAY_MS"))
  ok, refused, exhausted = 0, 0, 0
  local pos, n = 1, 0
  while pos <= #data do
    local b1, b2, b3, b4 = data:byte(pos, pos + 3)
    local len = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    if n % nthreads == id then
      table.insert(items, data:sub(pos + 4, pos + 3 + len))
    end
    pos = pos + 4 + len
    n = n + 1
  end
end

function request()
  next_item = next_item + 1
  local body = items[next_item]
  if body == nil then
    exhausted = exhausted + 1
    body = "exhausted"
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/octet-stream"}, body)
end

function delay()
  return delay_ms
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    refused = refused + 1
    if refused <= 3 then
      io.stderr:write("HTTP " .. status .. ": " .. string.sub(body, 1, 200) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local total_ok, total_refused, total_exhausted = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_refused = total_refused + thread:get("refused")
    total_exhausted = total_exhausted + thread:get("exhausted")
  end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "ok": %d, "refused": %d, "exhausted": %d, "errors": %d, '
    .. '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration / 1e6, total_ok, total_refused, total_exhausted,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

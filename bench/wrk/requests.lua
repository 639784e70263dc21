-- Requests for wrk, read from a targets file (one per line, tab-separated):
--   METHOD  PATH  TOKEN  BODY
-- TOKEN "-" sends no Authorization header; BODY "-" sends none. "{n}" in a body becomes a random
-- number per request. Each wrk thread walks the list round-robin from its own offset.
-- Usage: wrk -t THREADS -s bench/wrk/requests.lua URL -- targets.tsv THREADS

local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
end

local targets = {}
local position = 0

local function split(line)
   local fields = {}
   for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      table.insert(fields, field)
   end
   return fields
end

function init(args)
   for line in io.lines(args[1]) do
      if line ~= "" then
         local f = split(line)
         local headers = {["Accept"] = "application/json"}
         if f[3] ~= "-" then headers["Authorization"] = "Bearer " .. f[3] end
         local body = nil
         if f[4] ~= "-" then
            body = f[4]
            headers["Content-Type"] = "application/json"
         end
         table.insert(targets, {method = f[1], path = f[2], headers = headers, body = body,
                                templated = body ~= nil and body:find("{n}", 1, true) ~= nil,
                                ready = (body == nil or body:find("{n}", 1, true) == nil)
                                        and wrk.format(f[1], f[2], headers, body) or nil})
      end
   end
   math.randomseed(os.time() + (thread_index or 0) * 7919)
   position = math.floor(#targets * (thread_index or 0) / tonumber(args[2] or 1))
end

function request()
   position = position % #targets + 1
   local t = targets[position]
   if t.ready then return t.ready end
   local body = t.body:gsub("{n}", tostring(math.random(1, 100000000)))
   return wrk.format(t.method, t.path, t.headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
      '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

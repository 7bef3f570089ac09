-- Admission for one API key, atomically: GCRA for requests/minute and search units/minute, plus a
-- sorted set of in-flight request ids (expiring, so a crashed replica cannot leak slots).
-- KEYS: rpm tat, units tat, in-flight zset.  ARGV: rpm, units_per_minute, units cost, concurrency,
-- request id, in-flight ttl (ms). A limit of 0 means none.
-- Reply: allowed, refused (0 none, 1 rpm, 2 units, 3 concurrency), retry ms,
--        rpm remaining, rpm reset ms, units remaining, units reset ms, free concurrency slots.
local window = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function gcra(key, limit, cost)
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - window
  if now < allow_at then
    return false, tat, math.floor((now + window - tat) / interval), math.ceil(tat - now), math.ceil(allow_at - now)
  end
  return true, new_tat, math.floor((now + window - new_tat) / interval), math.ceil(new_tat - now), 0
end

local rpm, units_limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local concurrency, request_id, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local reply = {1, 0, 0, 0, 0, 0, 0, 0}
local rpm_tat, units_tat

if rpm > 0 then
  local ok, tat, remaining, reset, retry = gcra(KEYS[1], rpm, 1)
  reply[4], reply[5] = remaining, reset
  if not ok then reply[1], reply[2], reply[3] = 0, 1, retry; return reply end
  rpm_tat = tat
end
if units_limit > 0 then
  local ok, tat, remaining, reset, retry = gcra(KEYS[2], units_limit, cost)
  reply[6], reply[7] = remaining, reset
  if not ok then reply[1], reply[2], reply[3] = 0, 2, retry; return reply end
  units_tat = tat
end
if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local free = concurrency - redis.call('ZCARD', KEYS[3])
  if free <= 0 then reply[1], reply[2], reply[3] = 0, 3, 1000; return reply end
  redis.call('ZADD', KEYS[3], now + ttl, request_id)
  redis.call('PEXPIRE', KEYS[3], ttl)
  reply[8] = free - 1
end
if rpm_tat then redis.call('SET', KEYS[1], string.format('%.3f', rpm_tat), 'PX', math.ceil(rpm_tat - now) + 1000) end
if units_tat then redis.call('SET', KEYS[2], string.format('%.3f', units_tat), 'PX', math.ceil(units_tat - now) + 1000) end
return reply

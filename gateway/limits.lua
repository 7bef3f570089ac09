-- Admission for one API key, atomically: GCRA for requests/minute and search units/minute, plus a
-- sorted set of in-flight admission tokens (expiring, so a crashed replica cannot leak slots).
-- All times are integer microseconds and every interval is an integer, so the arithmetic is exact
-- (doubles hold integers up to 2^53; epoch microseconds are ~1.8e15).
-- KEYS: rpm tat, units tat, in-flight zset.  ARGV: rpm, units_per_minute, units cost, concurrency,
-- admission token, in-flight ttl (us). A limit of 0 means none.
-- Reply: allowed, refused (0 none, 1 rpm, 2 units, 3 concurrency), retry us,
--        rpm remaining, rpm reset us, units remaining, units reset us, free concurrency slots.
local window = 60000000
-- Lua turns numbers into strings with "%.14g", which would round a 16-digit microsecond time.
local function int(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local rpm, units_limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local concurrency, token, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])

-- One limit: its stored theoretical arrival time, and where it would move with this request's cost.
local function load(key, limit, n)
  local interval = math.floor(window / limit)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + n * interval
  local retry = new_tat - limit * interval - now
  if retry < 0 then retry = 0 end
  return {interval = interval, burst = limit * interval, tat = tat, new_tat = new_tat, retry = retry}
end

local function state(l, tat)
  return math.floor((now + l.burst - tat) / l.interval), tat - now
end

local rl = rpm > 0 and load(KEYS[1], rpm, 1) or nil
local ul = units_limit > 0 and load(KEYS[2], units_limit, cost) or nil
local refused, retry = 0, 0
if rl and rl.retry > 0 then refused, retry = 1, rl.retry
elseif ul and ul.retry > 0 then refused, retry = 2, ul.retry
end

local free = 0
if refused == 0 and concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', int(now))
  free = concurrency - redis.call('ZCARD', KEYS[3])
  if free <= 0 then refused, retry, free = 3, 1000000, 0 end
end

local admitted = refused == 0
local reply = {admitted and 1 or 0, refused, retry, 0, 0, 0, 0, 0}
if rl then
  local tat = admitted and rl.new_tat or rl.tat
  reply[4], reply[5] = state(rl, tat)
  if admitted then redis.call('SET', KEYS[1], int(tat), 'PX', int(math.ceil((tat - now) / 1000) + 1000)) end
end
if ul then
  local tat = admitted and ul.new_tat or ul.tat
  reply[6], reply[7] = state(ul, tat)
  if admitted then redis.call('SET', KEYS[2], int(tat), 'PX', int(math.ceil((tat - now) / 1000) + 1000)) end
end
if admitted and concurrency > 0 then
  redis.call('ZADD', KEYS[3], int(now + ttl), token)
  redis.call('PEXPIRE', KEYS[3], int(math.ceil(ttl / 1000)))
  reply[8] = free - 1
end
return reply

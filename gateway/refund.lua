-- Give back, atomically, what one admission took from a key's GCRA limits (limits.lua): its cost moves each
-- theoretical arrival time back, never before now (a key cannot bank more than its full allowance).
-- KEYS: rpm tat, units tat.  ARGV: rpm, units_per_minute, units cost (a limit of 0 was not charged).
local window = 60000000
local function int(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function give_back(key, limit, n)
  if limit <= 0 or n <= 0 then return end
  local stored = redis.call('GET', key)
  if not stored then return end
  local tat = tonumber(stored) - n * math.floor(window / limit)
  if tat <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, int(tat), 'PX', int(math.ceil((tat - now) / 1000) + 1000))
  end
end

give_back(KEYS[1], tonumber(ARGV[1]), 1)
give_back(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1

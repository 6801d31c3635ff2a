-- GCRA (the generic cell rate algorithm) for one tenant's bucket, run atomically by Redis.
--
-- KEYS[1]  the bucket's key (ratelimit::shared::key)
-- ARGV[1]  emission interval T in microseconds (per / count), at least 1
-- ARGV[2]  burst: how many requests a fresh (or long idle) tenant may send at once, at least 1
-- ARGV[3]  cost of this request in units of T (1 for a request)
--
-- The key holds the TAT, the theoretical arrival time, in microseconds of Redis's clock. The
-- decision is governor's, so that a route answers the same whichever store it uses:
--   tau = (burst - 1) * T  (the delay tolerance)
--   allowed  iff  now >= max(tat, now) + cost * T - burst * T
--   then tat' = max(tat, now) + cost * T
-- A fresh tenant may send `burst` requests at once, then one per T.
--
-- Returns {allowed (1/0), remaining, reset_ms, retry_after_ms}: remaining is what could be
-- sent now after this request; reset_ms is when the bucket is full again, counted as
-- (burst - remaining) * T the way the local limiter counts it; retry_after_ms is 0 when
-- allowed. Times are rounded up to whole milliseconds.
--
-- The time is Redis's (TIME), so the gateways' clocks do not matter. A script that reads TIME
-- before writing must call redis.replicate_commands() on Redis < 5 (before that, scripts were
-- replicated verbatim and a replica would read another time); from Redis 5 effects replication
-- is the default and from 7.0 (Debian 12's) the only mode, so the script writes no such call.

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if not interval or not burst or not cost or interval < 1 or burst < 1 or cost < 1 then
  return redis.error_reply('ERR gcra: interval, burst and cost must be positive numbers')
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A missing key (or one holding something that is not a number) is a full bucket.
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval

local function ms(us)
  return math.ceil(us / 1000)
end

if now < allow_at then
  -- Denied: nothing is written, so a throttled tenant does not push its own TAT further.
  return {0, 0, ms(burst * interval), ms(allow_at - now)}
end

-- Redis turns a Lua number into a string with 14 significant digits, fewer than a
-- microsecond timestamp has: format it as an integer. The key lives exactly as long as the
-- bucket takes to be full again; after that, a missing key means the same thing.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ms(new_tat - now))
local remaining = math.floor((now + burst * interval - new_tat) / interval)
return {1, remaining, ms((burst - remaining) * interval), 0}

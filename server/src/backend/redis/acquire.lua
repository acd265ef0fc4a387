-- Acquire: reserve the earliest slot at which the cost fits every limit, after the cooldown and
-- the last booked slot, if it is at most max_wait away. Reads everything before the first write;
-- a denial writes nothing.
-- ARGV 5 cost "c0 c1 c2 c3", 6 max_wait µs, 7 request_id ('' for none), 8 most leases held.
-- Returns {'G', seq, slot, wait, decider, nonce} | {'D', retry_after, decider} | {'R'} (request id
-- reused with another cost) | {'F'} (too many leases).

local limits, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local cost = {}
for v in string.gmatch(ARGV[5], '%S+') do cost[#cost + 1] = tonumber(v) end
local max_wait = tonumber(ARGV[6])
local rid = ARGV[7]
local max_leases = tonumber(ARGV[8])

local st = read_state()
apply_adopted(st, limits)
local now = math.max(now_micros(), num(st, 'hw'))

-- A retried acquire returns its lease while the lease is held.
if rid ~= '' then
  local m = redis.call('HGET', KEYS[4], rid)
  local rec = m and redis.call('HGET', KEYS[3], m)
  if rec then
    local lease = parse_lease(rec)
    if lease.slot + retention > now then
      for d = 1, 4 do
        if lease.requested[d] ~= cost[d] then return { 'R' } end
      end
      return { 'G', s(tonumber(m)), s(lease.slot), s(math.max(0, lease.slot - now)), lease.decider, st.n }
    end
  end
end

local t, decider = now, 'n'
for d = 0, 3 do
  local cu = num(st, 'cu' .. d)
  if cu > t and cost[d + 1] > 0 then t, decider = cu, 'c' end
end
if num(st, 'ls') > t then t, decider = num(st, 'ls'), st.ld end
for i, l in ipairs(limits) do
  local c = cost[l.dim + 1]
  local ti
  if l.bucket then ti = bucket_earliest(st, i - 1, l, c, t) else ti = window_earliest(st, l, c, t) end
  if ti == nil then return redis.error_reply('sluice: inconsistent window state') end
  if ti > t then t, decider = ti, s(i - 1) end
end
local wait = t - now
if wait > max_wait then return { 'D', s(wait), decider } end

-- Book: from here on, writes.
prune(st, now, retention, sliding)
if redis.call('ZCARD', KEYS[2]) >= max_leases then return { 'F' } end
if not st.n then
  st.n = ARGV[4]
  redis.call('HSET', KEYS[1], 'n', st.n)
end
local seq = book(st, limits, sliding, now, t, cost, decider, rid)
if type(seq) == 'table' then return seq end
expire_all(st, now, retention)
return { 'G', s(seq), s(t), s(wait), decider, st.n }

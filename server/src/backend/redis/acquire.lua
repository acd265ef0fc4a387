-- Acquire, for a batch of n requests in order: for each, reserve the earliest slot at which its
-- cost fits every limit, after the cooldown and the last booked slot, if it is at most its
-- max_wait away. Every request of the batch is decided at the same `now`, exactly as if they had
-- come one after the other. A denial writes nothing.
-- ARGV 5 most leases held, 6 n, then for request r (from 7 + 3 (r − 1)): cost "c0 c1 c2 c3",
-- max_wait µs, request_id ('' for none).
-- Returns one reply per request: {'G', seq, slot, wait, decider, nonce} | {'D', retry_after,
-- decider} | {'R'} (request id reused with another cost) | {'F'} (too many leases).

local limits, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local max_leases = tonumber(ARGV[5])
local n = tonumber(ARGV[6])

local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
forget_if_stale(st, now, retention, false)
drop_unused_totals(st, sliding)
apply_adopted(st, limits)

local held, created, wrote = nil, false, false
-- Bookings of the batch are written once per key at the end (see defer_writes); until the first
-- booking nothing is pending.
defer_writes()

local function acquire_one(cost, max_wait, rid)
  -- A retried acquire returns its lease while the lease is held.
  if rid ~= '' then
    local m = pending.rid_of[rid] or redis.call('HGET', KEYS[4], rid)
    local rec = m and (pending.lease_of[m] or redis.call('HGET', KEYS[3], m))
    if rec then
      local lease = parse_lease(rec)
      if lease.slot + retention > now and replayable(sliding, m, now) then
        for d = 1, 4 do
          if lease.requested[d] ~= cost[d] then return { 'R' } end
        end
        return { 'G', s(tonumber(m)), s(lease.slot), s(math.max(0, lease.slot - now)), lease.decider, st.n }
      end
    end
  end

  -- held_back: the in-flight limit decided the slot (only a lease timeout would free one).
  local t, decider, held_back = now, 'n', false
  for d = 0, 3 do
    local cu = num(st, 'cu' .. d)
    if cu > t and cost[d + 1] > 0 then t, decider = cu, 'c' end
  end
  if num(st, 'ls') > t then t, decider = num(st, 'ls'), st.ld end
  for i, l in ipairs(limits) do
    local c = cost[l.dim + 1]
    local ti
    if l.bucket then
      ti = bucket_earliest(st, l, c, t)
    elseif l.conc then
      ti = hold_earliest(l, now, t)
    else
      ti = window_earliest(st, l, c, t)
    end
    if ti == nil then return redis.error_reply('sluice: inconsistent window state') end
    if ti > t then t, decider, held_back = ti, s(i - 1), l.conc == true end
  end
  local wait = t - now
  -- A slot only a lease timeout would free is not booked (a report may free one sooner).
  if wait > max_wait or held_back then return { 'D', s(wait), decider } end

  -- Book: from here on, writes. Housekeeping once per batch.
  if held == nil then
    prune(st, now, retention, sliding, fdiv(retention, 8))
    held = redis.call('ZCARD', KEYS[2])
    created = held == 0
  end
  if held >= max_leases then return { 'F' } end
  if not st.n then
    st.n = ARGV[4]
    redis.call('HSET', KEYS[1], 'n', st.n)
  end
  local seq = book(st, limits, sliding, now, t, cost, decider, rid, true)
  if type(seq) == 'table' then return seq end
  held = held + 1
  wrote = true
  return { 'G', s(seq), s(t), s(wait), decider, st.n }
end

local replies = {}
for r = 1, n do
  local base = 7 + 3 * (r - 1)
  local cost = {}
  for v in string.gmatch(ARGV[base], '%S+') do cost[#cost + 1] = tonumber(v) end
  local reply = acquire_one(cost, tonumber(ARGV[base + 1]), ARGV[base + 2])
  if reply.err then return reply end
  replies[r] = reply
end
if wrote then
  flush_writes(st)
  expire_all(st, now, retention, created)
end
return replies

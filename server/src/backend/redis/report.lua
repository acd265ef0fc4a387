-- Report: lengthen cooldowns, count an overload or a success, replace a lease's estimate by its
-- real usage in every limit it still weighs on, charge usage the provider saw from outside
-- Sluice, and remember the provider's answer.
-- ARGV 5 lease nonce ('' for none), 6 lease seq, 7 usage of dimensions 1..3 ("-" keeps the
-- estimate), 8 cooldown orders, one per line: "dimension length status source", 9 overload:
-- "base cap jitter_permille at_least status source" ('' for none), 10 success ('1'/'0'),
-- 11 remaining readings: "limit remaining tolerance" triples, 12 observed status ('' for none),
-- 13 observed headers (opaque), 14 most leases held, 15 adopted budgets: "limit amount burst A
-- Wg" (a bucket's shape with that amount), 16 '1' for a member of a family (whose queued slots a
-- cooldown does not move), 17 '1' for a throttle (lowers an adaptive budget).
-- Returns {cooldown_remaining, cooldown_set, usage_applied, lease_unknown, outside_usage,
-- released, uplinks, adaptive scale (permille), 1 if the report lowered it}.

local limits, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
begin_writes(st)
forget_if_stale(st, now, retention, false)
drop_unused_totals(st, sliding)
apply_adopted(st, limits)
apply_adaptive(st, limits, now)

-- Read: the lease, if it is this state's and still held.
local lease, seq
if ARGV[5] ~= '' and ARGV[5] == st.n then
  seq = tonumber(ARGV[6])
  lease = entry_at(st, seq)
  if lease and not retained(lease, now, retention) then lease = nil end
end
local usage = {}
for v in string.gmatch(ARGV[7], '%S+') do
  usage[#usage + 1] = tonumber(v) or false -- false for '-'
end

-- Write.
prune(st, now, retention, sliding, fdiv(retention, 8))
W.dirty = true
local cooldown_set = 0
local function lengthen(d, until_, status, source)
  if until_ > num(st, CU[d]) then
    st[CU[d]], st[CS[d]], st[CC[d]] = until_, tonumber(status) or 0, source
    st.ch = math.max(num(st, 'ch'), until_)
    cooldown_set = 1
  end
end
for line in string.gmatch(ARGV[8], '[^\n]+') do
  local d, len, status, source = string.match(line, '^(%d) (%d+) (%d+) (.*)$')
  if d then lengthen(tonumber(d), now + tonumber(len), status, source) end
end
if ARGV[9] ~= '' then
  local base, cap, jitter, at_least, status, source =
    string.match(ARGV[9], '^(%d+) (%d+) (%d+) (%d+) (%d+) (.*)$')
  local streak = num(st, 'ov') + 1
  st.ov = streak
  -- base × 2^(streak − 1), at most cap; then × jitter / 1000; at least at_least.
  local doubled, cap_n = tonumber(base), tonumber(cap)
  for _ = 2, math.min(streak, 31) do
    if doubled >= cap_n then break end
    doubled = doubled * 2
  end
  doubled = math.min(doubled, cap_n)
  local length = math.max(fdiv(doubled * tonumber(jitter), 1000), tonumber(at_least))
  lengthen(0, now + length, status, source)
end
if ARGV[10] == '1' and num(st, 'ov') > 0 then st.ov = nil end

-- A throttle (a 429 that is not a quota) lowers an adaptive budget by 0.7, once per cooldown
-- episode (pe: its end), never below a tenth, and remembers the scale it came at (pp); the quiet
-- period restarts either way (core Adaptive::throttle). pr: when the budget is whole again (the
-- state lives until then).
local adaptive_lowered = 0
if ARGV[17] == '1' and limits.period then
  local sc = limits.scale
  local until_ = now
  for d = 0, 3 do until_ = math.max(until_, num(st, CU[d])) end
  if now >= num(st, 'pe') then
    st.pp = sc
    sc = math.max(100, fdiv(sc * 700, FULL))
    st.pe = until_
    adaptive_lowered = 1
    -- What each bucket owes was charged at the old scale: charged again at the new one, owed ×
    -- old / new rounded up, counted from the latest booked slot (before it the TAT also holds the
    -- time to that slot, which owes nothing), at most a day plus a drain from now (core
    -- BucketShape::rescale).
    local old, seen, since = limits.scale, {}, math.max(now, latest_slot(st))
    for _, l in ipairs(limits) do
      local k, f = 0, 0
      if l.bucket and sc < old and not seen[l.kf] then k, f = num(st, l.kf), num(st, l.ff) end
      if k > since or (k == since and f > 0) then
        seen[l.kf] = true
        local owed = (k - since) * l.a + f
        local cap = (86400000000 + l.span - (since - now)) * l.a
        local q, units = fdiv(owed, sc), cap
        if q <= fdiv(cap, old) then
          units = math.min(cap, q * old - fdiv(-((owed - q * sc) * old), sc))
        end
        units = math.max(units, owed)
        local whole = fdiv(units, l.a)
        st[l.kf], st[l.ff] = since + whole, units - whole * l.a
      end
    end
  else
    st.pp = math.max(num(st, 'pp'), sc)
  end
  st.ps, st.pt = sc, now
  st.pr = 0
  if sc < FULL then st.pr = now + periods_to_full(st) * limits.period end
  apply_adaptive(st, limits, now)
end

-- The reported call is over: its in-flight slot (if it still holds one) is free.
local released = 0
if lease then released = redis.call('ZREM', K[3], s(seq)) end
-- The call is over: a later acquire with its request id is a new call.
if released == 1 and lease[E_RID] ~= '' and tonumber(redis.call('HGET', K[1], lease[E_RID])) == seq then
  redis.call('HDEL', K[1], lease[E_RID])
end

-- Real usage in place of the lease's estimate.
local usage_applied = 0
if lease and #usage == 3 then
  usage_applied = 1
  local err = reconcile(st, limits, sliding, lease, seq, usage, now, retention)
  if err then return err end
end

-- Provider budgets adopted in place of sliding limits' configured amounts.
local lowered = adaptive_lowered == 1
local adopt = {}
for v in string.gmatch(ARGV[15], '%S+') do adopt[#adopt + 1] = tonumber(v) end
for r = 1, #adopt - 4, 5 do
  local l = limits[adopt[r] + 1]
  local amount, burst, a, wg = adopt[r + 1], adopt[r + 2], adopt[r + 3], adopt[r + 4]
  if l and l.abf and amount >= 1 and amount <= MAX_EXACT
    and (amount ~= l.amount or burst ~= l.burst) then
    if amount < l.amount or burst < l.burst then lowered = true end
    -- A bucket's state in the new shape (core BucketShape::convert): what it owes carries over
    -- in whole tokens, rounded up, draining at the new rate, at most a burst plus a day (the
    -- longest wait) at the new rate. Counted from now and from the latest booked slot (the time
    -- up to it kept as time: it owes nothing and must not drain early at a higher rate); the
    -- later state wins, the second at most a day plus a drain from now.
    local k, f = num(st, l.kf), num(st, l.ff)
    local most = burst - fdiv(-86400000000 * a, wg)
    local function from(t)
      local owed = 0
      if k > t or (k == t and f > 0) then owed = (k - t) * l.a + f end
      local units = math.min(-fdiv(-owed, l.wg), most) * wg
      local whole = fdiv(units, a)
      return t + whole, units - whole * a
    end
    local nk, nf = from(now)
    local lk, lf = from(math.max(now, latest_slot(st)))
    local reach = now + 86400000000 + math.max(l.window, math.ceil(burst * l.window / amount))
    if pair_less(reach, 0, lk, lf) then lk, lf = reach, 0 end
    if pair_less(nk, nf, lk, lf) then nk, nf = lk, lf end
    st[l.kf], st[l.ff] = nk, nf
    set_shape(l, amount, burst, a, wg)
    st[l.abf] = { amount, burst, a, wg }
  end
  if l and l.af and amount >= 1 and amount <= MAX_EXACT then
    if l.adopt and amount < l.base then lowered = true end
    -- Every sliding limit of this identity (dimension and window) shares the adopted budget.
    for _, o in ipairs(limits) do
      if o.adopt and o.af == l.af then o.base = amount; o.amount = scaled(amount, limits.scale) end
    end
    st[l.af] = amount
  end
end

-- Queued slots that an active cooldown covers move to its end; a lowered budget books them again.
local cooldown_end = now
for d = 0, 3 do cooldown_end = math.max(cooldown_end, num(st, CU[d])) end
-- Most reports neither lower a budget nor cover a queued slot, and most find nothing queued (the
-- latest slot booked is past): they read no queued lease.
if ARGV[16] ~= '1' and latest_slot(st) > now and (lowered or cooldown_end > now) then
  local err = move_queued(st, limits, sliding, now, cooldown_end, lowered)
  if err then return err end
end

-- Usage the provider saw beyond this view: booked as a lease of its own at the latest slot.
local outside = 0
local created = false
local readings = {}
for v in string.gmatch(ARGV[11], '%S+') do readings[#readings + 1] = tonumber(v) end
for r = 1, #readings - 2, 3 do
  local i, remaining, tolerance = readings[r], readings[r + 1], readings[r + 2]
  local l = limits[i + 1]
  if l and not l.conc then
    local used = limit_usage(st, l, now)
    local own = math.max(0, capacity(l) - used)
    if l.bucket then own = share(own, limits.scale) end
    local seen = remaining + tolerance
    local held = leases_held(st)
    local charge = own - seen
    local cost = { 0, 0, 0, 0 }
    cost[l.dim + 1] = charge
    if seen < own and held < tonumber(ARGV[14]) and totals_fit(st, sliding, cost, now, retention) then
      if log_length(st) == 0 then created = true end
      if not st.n then st.n = ARGV[4] end
      local seq = book(st, limits, sliding, now, math.max(now, latest_slot(st)), cost, s(i), '',
        false, nil, nil, nil, false)
      if type(seq) == 'table' then return seq end
      outside = outside + charge
    end
  end
end

if ARGV[12] ~= '' then
  st.rs, st.ra, st.rh = tonumber(ARGV[12]) or 0, now, ARGV[13]
end
st.hw = now
flush_writes(st)
expire_all(st, now, retention, created)
write_state(st)
local lease_unknown = 0
if ARGV[5] ~= '' and not lease then lease_unknown = 1 end
local remaining = 0
for d = 0, 3 do remaining = math.max(remaining, num(st, CU[d]) - now) end
return { remaining, cooldown_set, usage_applied, lease_unknown, outside, released,
  lease and lease[E_UP] or '', limits.scale, adaptive_lowered }

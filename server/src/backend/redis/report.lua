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
-- released, uplinks, adaptive scale (permille), '1' if the report lowered it}.

local limits, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
forget_if_stale(st, now, retention, false)
drop_unused_totals(st, sliding)
apply_adopted(st, limits)
apply_adaptive(st, limits, now)

-- Read: the lease, if it is this state's and still held.
local lease, m
if ARGV[5] ~= '' and ARGV[5] == st.n then
  m = member(tonumber(ARGV[6]))
  local rec = redis.call('HGET', KEYS[3], m)
  if rec then
    lease = parse_lease(rec)
    if not retained(lease.slot, m, now, retention) then lease = nil end
  end
end
local usage = {}
for v in string.gmatch(ARGV[7], '%S+') do
  usage[#usage + 1] = tonumber(v) or false -- false for '-'
end

-- Write.
prune(st, now, retention, sliding, fdiv(retention, 8))
local cooldown_set = 0
local function lengthen(d, until_, status, source)
  if until_ > num(st, CU[d]) then
    st[CU[d]] = s(until_)
    st.ch = s(math.max(num(st, 'ch'), until_))
    redis.call('HSET', KEYS[1], CU[d], st[CU[d]], CS[d], status, CC[d], source,
      'ch', st.ch)
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
  st.ov = s(streak)
  redis.call('HSET', KEYS[1], 'ov', st.ov)
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
if ARGV[10] == '1' and num(st, 'ov') > 0 then
  st.ov = '0'
  redis.call('HSET', KEYS[1], 'ov', '0')
end

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
    st.pp = s(sc)
    sc = math.max(100, fdiv(sc * 700, FULL))
    st.pe = s(until_)
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
        if q <= fdiv(cap, old) then units = math.min(cap, q * old - fdiv(-((owed - q * sc) * old), sc)) end
        units = math.max(units, owed)
        local whole = fdiv(units, l.a)
        st[l.kf], st[l.ff] = s(since + whole), s(units - whole * l.a)
        redis.call('HSET', KEYS[1], l.kf, st[l.kf], l.ff, st[l.ff])
      end
    end
  else
    st.pp = s(math.max(num(st, 'pp'), sc))
  end
  st.ps, st.pt = s(sc), s(now)
  st.pr = '0'
  if sc < FULL then st.pr = s(now + periods_to_full(st) * limits.period) end
  redis.call('HSET', KEYS[1], 'ps', st.ps, 'pt', st.pt, 'pe', st.pe or '0', 'pr', st.pr,
    'pp', st.pp)
  if st.old_adaptive then redis.call('HDEL', KEYS[1], 'as', 'at', 'ae', 'ap', 'ar') end
  apply_adaptive(st, limits, now)
end

-- The reported call is over: its in-flight slot (if it still holds one) is free.
local released = 0
if lease then released = redis.call('ZREM', KEYS[9], m) end
-- The call is over: a later acquire with its request id is a new call.
if released == 1 and lease.rid ~= '' and redis.call('HGET', KEYS[4], lease.rid) == m then
  redis.call('HDEL', KEYS[4], lease.rid)
end

local usage_applied = 0
if lease and #usage == 3 then
  usage_applied = 1
  for d = 1, 3 do
    local new = usage[d]
    local old = lease.cost[d + 1]
    if new and new ~= old and sliding[d] and new > old then
      local costs = { 0, 0, 0, 0 }
      costs[d + 1] = new - old
      -- As on the memory backend: a charge that would reach 2^53 keeps the estimate.
      if not totals_fit(st, sliding, costs, now, retention) then new = old end
    end
    if new and new ~= old then -- false: keep the estimate
      local delta = new - old
      lease.cost[d + 1] = new
      if sliding[d] then
        local key = KEYS[5 + d]
        local rank = redis.call('ZRANK', key, m)
        local after = redis.call('ZCARD', key) - rank
        if after <= rank and after <= SHIFT_BOUND then
          -- This lease and every later one move by delta.
          for _, later in ipairs(redis.call('ZRANGE', key, rank, -1)) do
            redis.call('ZINCRBY', key, s(delta), later)
          end
          st[T[d]] = s(num(st, T[d]) + delta)
        elseif rank <= SHIFT_BOUND then
          -- Equivalently: every earlier lease and the base move by -delta.
          if rank > 0 then
            for _, earlier in ipairs(redis.call('ZRANGE', key, 0, rank - 1)) do
              redis.call('ZINCRBY', key, s(-delta), earlier)
            end
          end
          st[B[d]] = s(num(st, B[d]) - delta)
        elseif delta > 0 then
          -- Too many leases on both sides: charge at the newest lease, which only overcounts.
          local last = redis.call('ZRANGE', key, -1, -1)
          redis.call('ZINCRBY', key, s(delta), last[1])
          st[T[d]] = s(num(st, T[d]) + delta)
        else
          lease.cost[d + 1] = old -- a refund that cannot be placed exactly is not made
        end
        if num(st, T[d]) >= MAX_EXACT or num(st, B[d]) <= -MAX_EXACT then
          return redis.error_reply('sluice: running total beyond 2^53')
        end
        redis.call('HSET', KEYS[1], B[d], st[B[d]] or '0', T[d], st[T[d]] or '0')
      end
      for _, l in ipairs(limits) do
        if l.bucket and l.dim == d and lease.slot + l.span > now then
          local ki, fi = l.kf, l.ff
          local k, f = num(st, ki), num(st, fi)
          if delta > 0 then
            -- A charge beyond one burst counts as one burst: the bucket is overdrawn at most once.
            k, f = pair_add_units(k, f, math.min(inflated(delta, limits.scale), l.burst) * l.wg, l.a)
          elseif limits.scale >= FULL then
            -- Lowering this lease's cost lowers the GCRA terms up to it; later leases' terms
            -- bound the refund from below. (A scaled bucket is not refunded: later leases were
            -- charged at a scale the floor cannot see.)
            local refund = math.min(-delta, l.burst)
            local rk, rf = pair_add_units(k, f, -refund * l.wg, l.a)
            local rank = redis.call('ZRANK', KEYS[2], m)
            local later = redis.call('ZRANGE', KEYS[2], rank + 1, -1)
            if #later <= SHIFT_BOUND then
              local acc_k, acc_f = 0, 0
              for j = #later, 1, -1 do
                local lj = parse_lease(redis.call('HGET', KEYS[3], later[j]))
                acc_k, acc_f = pair_add_units(acc_k, acc_f, lj.cost[d + 1] * l.wg, l.a)
                local tk, tf = pair_add_units(lj.slot + acc_k, acc_f, 0, l.a)
                if pair_less(rk, rf, tk, tf) then rk, rf = tk, tf end
              end
              k, f = rk, rf
            end
          end
          st[ki], st[fi] = s(k), s(f)
          redis.call('HSET', KEYS[1], ki, st[ki], fi, st[fi])
        end
      end
    end
  end
  redis.call('HSET', KEYS[3], m, format_lease(lease))
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
    st[l.kf], st[l.ff] = s(nk), s(nf)
    set_shape(l, amount, burst, a, wg)
    st[l.abf] = s(amount) .. ' ' .. s(burst) .. ' ' .. s(a) .. ' ' .. s(wg)
    redis.call('HSET', KEYS[1], l.kf, st[l.kf], l.ff, st[l.ff], l.abf, st[l.abf])
  end
  if l and l.af and amount >= 1 and amount <= MAX_EXACT then
    if l.adopt and amount < l.base then lowered = true end
    -- Every sliding limit of this identity (dimension and window) shares the adopted budget.
    for _, o in ipairs(limits) do
      if o.adopt and o.af == l.af then o.base = amount; o.amount = scaled(amount, limits.scale) end
    end
    st[l.af] = s(amount)
    redis.call('HSET', KEYS[1], l.af, st[l.af])
  end
end

-- Queued slots (after now) that an active cooldown covers move to its end, all by the same
-- amount, so queued workers keep their order and spacing (at most MAX_DEFERRED of them). When this
-- report lowered a budget (adopted or adaptive), they are booked again in order under it instead
-- (core Ledger::respace_queued), keeping their ids.
local cooldown_end = now
for d = 0, 3 do cooldown_end = math.max(cooldown_end, num(st, CU[d])) end
local first = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. s(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local delta = #first > 0 and math.max(0, cooldown_end - tonumber(first[2])) or 0
-- Most reports neither lower a budget nor cover a queued slot: they read no queued lease.
if ARGV[16] ~= '1' and #first > 0 and (lowered or delta > 0)
  and redis.call('ZCOUNT', KEYS[2], '(' .. s(now), '+inf') <= MAX_DEFERRED then
  local queued = {}
  local unreconciled = true
  for _, q in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. s(now), '+inf')) do
    local rec = parse_lease(redis.call('HGET', KEYS[3], q))
    for d = 1, 4 do unreconciled = unreconciled and rec.cost[d] == rec.requested[d] end
    queued[#queued + 1] = { m = q, rec = rec }
  end
  if lowered and unreconciled then
    step_out_of(st, limits, sliding, queued, function(f, v) st[f] = v end)
    for _, q in ipairs(queued) do
      local rec = q.rec
      local t, decider = earliest_on(st, limits, rec.cost, rec.slot + delta, now, true)
      if t == nil then return redis.error_reply('sluice: inconsistent window state') end
      for _, l in ipairs(limits) do
        if l.bucket then
          local k, f = num(st, l.kf), num(st, l.ff)
          if k < t then k, f = t, 0 end
          k, f = pair_add_units(k, f, inflated(rec.cost[l.dim + 1], limits.scale) * l.wg, l.a)
          st[l.kf], st[l.ff] = s(k), s(f)
        elseif l.conc and redis.call('ZSCORE', KEYS[9], q.m) then
          redis.call('ZADD', KEYS[9], s(t + l.window), q.m)
        end
      end
      for d = 0, 3 do
        if sliding[d] then st[T[d]] = redis.call('ZSCORE', KEYS[5 + d], q.m) end
      end
      rec.slot, rec.decider = t, decider
      redis.call('HSET', KEYS[3], q.m, format_lease(rec))
      redis.call('ZADD', KEYS[2], 'XX', s(t), q.m)
      st.ls, st.ld = s(t), decider
    end
    local fields = { 'ls', st.ls, 'ld', st.ld }
    for _, l in ipairs(limits) do
      if l.bucket then
        fields[#fields + 1] = l.kf; fields[#fields + 1] = st[l.kf]
        fields[#fields + 1] = l.ff; fields[#fields + 1] = st[l.ff]
      end
    end
    redis.call('HSET', KEYS[1], unpack(fields))
    redis.call('HDEL', KEYS[1], 'lm')
  elseif delta > 0 then
    for _, q in ipairs(queued) do
      local rec = q.rec
      rec.slot = rec.slot + delta
      redis.call('HSET', KEYS[3], q.m, format_lease(rec))
      redis.call('ZADD', KEYS[2], 'XX', s(rec.slot), q.m)
      local hold_end = redis.call('ZSCORE', KEYS[9], q.m)
      if hold_end then redis.call('ZADD', KEYS[9], s(tonumber(hold_end) + delta), q.m) end
    end
    st.ls = s(num(st, 'ls') + delta)
    redis.call('HSET', KEYS[1], 'ls', st.ls)
    if num(st, 'lm') > now then
      st.lm = s(num(st, 'lm') + delta)
      redis.call('HSET', KEYS[1], 'lm', st.lm)
    end
    for _, l in ipairs(limits) do
      if l.bucket then
        local k, f = num(st, l.kf), num(st, l.ff)
        if k > now or (k == now and f > 0) then
          st[l.kf] = s(k + delta)
          redis.call('HSET', KEYS[1], l.kf, st[l.kf])
        end
      end
    end
  end
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
    local held = redis.call('ZCARD', KEYS[2])
    local charge = own - seen
    local cost = { 0, 0, 0, 0 }
    cost[l.dim + 1] = charge
    if seen < own and held < tonumber(ARGV[14]) and totals_fit(st, sliding, cost, now, retention) then
      if held == 0 then created = true end
      if not st.n then
        st.n = ARGV[4]
        redis.call('HSET', KEYS[1], 'n', st.n)
      end
      local seq = book(st, limits, sliding, now, math.max(now, latest_slot(st)), cost, s(i), '',
        false, nil, nil, nil, false)
      if type(seq) == 'table' then return seq end
      outside = outside + charge
    end
  end
end

if ARGV[12] ~= '' then
  st.ra = s(now)
  redis.call('HSET', KEYS[1], 'rs', ARGV[12], 'ra', st.ra, 'rh', ARGV[13])
end
redis.call('HSET', KEYS[1], 'hw', s(now))
expire_all(st, now, retention, created)
local lease_unknown = 0
if ARGV[5] ~= '' and not lease then lease_unknown = 1 end
local remaining = 0
for d = 0, 3 do remaining = math.max(remaining, num(st, CU[d]) - now) end
return { s(remaining), cooldown_set, usage_applied, lease_unknown, s(outside), released,
  lease and lease.up or '', s(limits.scale), adaptive_lowered }

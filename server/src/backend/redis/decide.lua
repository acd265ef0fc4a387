-- Decisions (part of the prelude, after log.lua; core Ledger::earliest and ::book): the earliest
-- slot a cost fits every limit at (buckets, in-flight slots, sliding windows), the running totals'
-- bounds, stepping leases out of a decision's view, booking a lease and burying overtaken ones.
-- Earliest slot of bucket limit l at or after t0 for cost c.
local function bucket_earliest(st, l, c, t0)
  local k, f = num(st, l.kf), num(st, l.ff)
  if k == 0 and f == 0 then return t0 end
  local t = k - fdiv((l.burst - c) * l.wg - f, l.a)
  return math.max(t0, t)
end

-- Earliest slot at or after t0 at which fewer than l.amount in-flight slots are held (no
-- writes). Every held slot began at or before t0, so a slot at t overlaps those ending after t.
local function hold_earliest(l, now, t0)
  local held = redis.call('ZCOUNT', K[3], '(' .. s(now), '+inf')
  if held < l.amount then return t0 end
  local e = redis.call('ZRANGEBYSCORE', K[3], '(' .. s(now), '+inf', 'WITHSCORES', 'LIMIT',
    held - l.amount, 1)
  return math.max(t0, tonumber(e[2]))
end

-- Index of the first entry whose running total of dimension d is valid (from seq z<d> on).
local function valid_from(st, d)
  return math.max(0, num(st, Z[d]) - num(st, 'h0'))
end

-- Earliest slot of sliding limit l at or after t0 for cost c (no writes but the search hint,
-- which is kept only if the state is written anyway).
local function window_earliest(st, l, c, t0)
  local base, total = st[l.bf] or 0, st[l.tf] or 0
  -- An adopted budget below this call's cost lets the call go alone.
  local amount = l.amount
  if c > amount then amount = c end
  local fill = total - base + c
  if fill <= amount then return t0 end
  local target = base + fill - amount
  flush_writes(st)
  local h0 = st.h0 or 0
  local hint = st[l.hint]
  local i, e = first_at_least(st, E_CUM + l.dim, target, valid_from(st, l.dim), hint and hint - h0)
  if i == nil then return nil end
  st[l.hint] = h0 + i
  return mmax(t0, e[E_REACH] + l.window)
end

-- Earliest slot at or after t0 at which cost fits every one of `limits` on state st, after its
-- cooldowns and its last booked slot (core Ledger::earliest); what decided it; and whether the
-- in-flight limit held it back. nil when the window state is inconsistent. A `moved` lease holds
-- its in-flight slot already: the in-flight limit does not bind it (core Ledger::earliest_booked).
local function earliest_on(st, limits, cost, t0, now, moved)
  local t, decider, held_back = t0, 'n', false
  if st.cu0 or st.cu1 or st.cu2 or st.cu3 then
    for d = 0, 3 do
      local cu = st[CU[d]]
      if cu and cu > t and cost[d + 1] > 0 then t, decider = cu, 'c' end
    end
  end
  local ls = st.ls
  if ls and ls > t then t, decider = ls, st.ld or 'n' end
  local scale = limits.scale or FULL
  for _, l in ipairs(limits) do
    local c = cost[l.dim + 1]
    local ti
    if l.bucket then
      ti = bucket_earliest(st, l, inflated(c, scale), t)
    elseif l.conc then
      ti = moved and t or hold_earliest(l, now, t)
    else
      ti = window_earliest(st, l, c, t)
    end
    if ti == nil then return nil end
    if ti > t then t, decider, held_back = ti, l.code, l.conc == true end
  end
  return t, decider, held_back
end

-- A time with a fraction: whole µs plus frac/A µs, 0 <= frac < A.
local function pair_add_units(k, f, units, a)
  local u = f + units
  local whole = fdiv(u, a)
  return k + whole, u - whole * a
end

local function pair_less(k1, f1, k2, f2)
  return k1 < k2 or (k1 == k2 and f1 < f2)
end

-- The running totals of dimension d restart at its base: every entry's total and the state's move
-- down by the base, so totals stay below 2^53 however long the log never empties (rare: once per
-- ~2^52 booked). The log turns over once, in chunks: popped from its head, pushed to its tail.
local function rebase(st, d)
  local b = num(st, B[d])
  if b <= 0 then return end
  flush_writes(st)
  local n = log_length(st)
  local z = valid_from(st, d)
  for i = 0, n - 1, 4000 do
    local raws = redis.call('LPOP', K[2], math.min(4000, n - i))
    for j, raw in ipairs(raws) do
      if i + j - 1 >= z then
        local e = unpack_entry(raw)
        e[E_CUM + d] = e[E_CUM + d] - b
        raws[j] = pack_entry(e)
      end
    end
    redis.call('RPUSH', K[2], unpack(raws))
  end
  restore_log_ttl(st)
  -- A lease being reconciled holds its entry in hand: it moves with the others.
  local held = W.lease
  if held and held[E_SEQ] >= num(st, Z[d]) then held[E_CUM + d] = held[E_CUM + d] - b end
  st[T[d]], st[B[d]] = num(st, T[d]) - b, 0
  W.dirty = true
end

-- Whether adding costs (a table of 4) keeps every running total below 2^53 (core
-- Ledger::totals_fit). When a total would pass it, expired leases are pruned to the memory
-- backend's exact retention and the totals rebased first: false only when the retained log itself
-- would hold 2^53, as the memory backend judges. May write (housekeeping); changes no decision.
local function totals_fit(st, sliding, costs, now, retention)
  local near = false
  for d = 0, 3 do
    if sliding[d] and (st[T[d]] or 0) + costs[d + 1] >= MAX_EXACT then near = true end
  end
  if not near then return true end
  flush_writes(st)
  for _ = 1, 64 do
    local before = log_length(st)
    prune(st, now, retention, sliding, 0)
    if log_length(st) == before then break end
  end
  for d = 0, 3 do
    if sliding[d] then
      if num(st, T[d]) + costs[d + 1] >= MAX_EXACT then rebase(st, d) end
      if num(st, T[d]) - num(st, B[d]) + costs[d + 1] >= MAX_EXACT then return false end
    end
  end
  return true
end

-- Bucket limit l's TAT without the raw costs of `leases` (entries that step out of the state, core
-- Ledger::step_out): TAT − Wg × their cost, not below zero (above the true TAT unless they were
-- booked on a full bucket: the bucket then looks fuller, never emptier).
local function tat_without(st, l, leases)
  local sum = 0
  for _, e in ipairs(leases) do sum = sum + e[E_COST + l.dim] end
  local k, f = pair_add_units(num(st, l.kf), num(st, l.ff), -sum * l.wg, l.a)
  if k < 0 then k, f = 0, 0 end
  return k, f
end

-- The latest slot ever booked.
local function latest_slot(st) return math.max(num(st, 'ls'), num(st, 'lm')) end

-- Takes `leases` (the last #leases entries of the log) out of the state a decision reads (core
-- Ledger::step_out): the entry before them ends the log (its reach and decider are the frontier,
-- its running totals the totals), and the buckets give back the leases' raw costs. Writes
-- nothing to Redis: every field goes through set(field, value).
local function step_out_of(st, limits, sliding, leases, set)
  local k = #leases
  set('lm', nil)
  local n = log_length(st)
  local last = n > k and entry_index(n - k - 1) or nil
  if last then
    set('ls', last[E_REACH])
    set('ld', last[E_DECIDER])
  else
    set('ls', 0)
  end
  for d = 0, 3 do
    if sliding[d] then
      local total = num(st, B[d])
      if last and last[E_SEQ] >= num(st, Z[d]) then total = last[E_CUM + d] end
      set(T[d], total)
    end
  end
  for _, l in ipairs(limits) do
    if l.bucket then
      local kk, ff = tat_without(st, l, leases)
      set(l.kf, kk); set(l.ff, ff)
    end
  end
end

-- Books cost (a table of 4) at slot t with decider, as the next lease; collects its writes (see
-- flush_writes) and updates st. A lease that `holds` a call takes an in-flight slot (written at
-- once, so the next acquire of a batch sees it). A lease that `orders` (core NewLease::orders: a
-- call of this service, or one this state's own limits or cooldown queued) moves the frontier of
-- arrival order; others (a sibling's call queued by its own limit, usage from outside) only the
-- latest slot. Returns the lease's sequence number (or an error reply).
local function book(st, limits, sliding, now, t, cost, decider, rid, holds, up, rank, left, orders)
  local seq = st.q or 0
  local ls, lm = st.ls or 0, st.lm or 0
  local latest = ls > lm and ls or lm
  local reach = t > latest and t or latest
  rank = rank or 0
  -- Defaults are not stored (decider 'n', rank 0, lm at or below ls): each field costs its encoding
  -- on every write.
  if orders ~= false and t >= ls then
    ls = t
    st.ls = t
    if decider == 'n' then st.ld = nil else st.ld = decider end
    if rank == 0 then st.lr = nil else st.lr = rank end
  end
  if t > latest then
    if t > ls then st.lm = t else st.lm = nil end
  end
  if not limits.windows_only then
    for _, l in ipairs(limits) do
      if l.conc and holds then
        rcall('ZADD', K[3], t + l.window, seq)
        -- The hold set may have just been (re)created after emptying: give it the other keys'
        -- TTL.
        if st.ex then rcall('PEXPIREAT', K[3], math.ceil(st.ex / 1000)) end
      elseif l.bucket then
        local k, f = st[l.kf] or 0, st[l.ff] or 0
        if k < t then k, f = t, 0 end
        k, f = pair_add_units(k, f, inflated(cost[l.dim + 1], limits.scale or FULL) * l.wg, l.a)
        st[l.kf], st[l.ff] = k, f
      end
    end
  end
  local c0, c1, c2, c3 = cost[1], cost[2], cost[3], cost[4]
  local m0, m1, m2, m3 = 0, 0, 0, 0
  if sliding[0] then m0 = (st.t0 or 0) + c0; st.t0 = m0 end
  if sliding[1] then m1 = (st.t1 or 0) + c1; st.t1 = m1 end
  if sliding[2] then m2 = (st.t2 or 0) + c2; st.t2 = m2 end
  if sliding[3] then m3 = (st.t3 or 0) + c3; st.t3 = m3 end
  if m0 >= MAX_EXACT or m1 >= MAX_EXACT or m2 >= MAX_EXACT or m3 >= MAX_EXACT then
    return redis.error_reply('sluice: running total beyond 2^53')
  end
  if seq == (st.h0 or 0) then
    -- The log was empty: its list is created again, without a TTL until expire_all sets one.
    st.hr, W.log_created = reach, true
  end
  st.q, st.hw = seq + 1, now
  W.dirty = true
  up = up or ''
  local raw
  if up == '' and c2 == 0 and c3 == 0 and m2 == 0 and m3 == 0 and #decider < MAX_DECIDER then
    raw = spack(COMPACT, seq, t, reach, rank, #rid, rid, c0, c1, m0, m1, left or 0, #decider, decider)
  else
    raw = spack(ENTRY, seq, t, reach, rank, #rid, rid, c0, c1, c2, c3, m0, m1, m2, m3, left or 0,
      c0, c1, c2, c3, #decider, decider, #up, up)
  end
  local log = W.log
  log[#log + 1] = raw
  W.entry_of[seq] = raw
  if rid ~= '' then
    local rids = W.rids
    rids[#rids + 1] = rid; rids[#rids + 1] = seq
    W.rid_of[rid] = seq
  end
  return seq
end

-- Replaces the tail of the log, `k` entries, by tombstones (they are booked again elsewhere): no
-- cost, the running totals and reach of the entry before them, so the log stays in order.
local function bury_tail(st, k)
  local n = log_length(st)
  local before = n > k and entry_index(n - k - 1) or nil
  local graves = entries_between(n - k, n - 1)
  -- Tombstones already among them (an earlier overtake's) are counted in dd already.
  local fresh = 0
  for _, g in ipairs(graves) do
    if g[E_RANK] ~= DEAD then fresh = fresh + 1 end
    g[E_SLOT] = before and before[E_REACH] or 0
    g[E_REACH] = g[E_SLOT]
    for d = 0, 3 do
      g[E_COST + d] = 0
      -- A running total from before the dimension's totals restarted (z) is not one: the base.
      local valid = before and before[E_SEQ] >= num(st, Z[d])
      g[E_CUM + d] = valid and before[E_CUM + d] or num(st, B[d])
    end
    g[E_DECIDER] = before and before[E_DECIDER] or 'n'
    g[E_RID], g[E_UP], g[E_RANK], g[E_LEFT] = '', '', DEAD, 0
    for d = 0, 3 do g[E_REQ + d] = 0 end
  end
  rewrite_tail(st, n - k, graves)
  st.dd = num(st, 'dd') + fresh
  if n == k then st.hr = graves[1][E_REACH] end
end

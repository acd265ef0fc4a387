-- Reports (part of the prelude, after decide.lua): what a limit holds now, real usage in place of
-- an estimate, and queued slots moved by a cooldown or booked again under a lowered budget.
-- Cost booked in limit l as of now, and the time until it is wholly free (no writes).
local function limit_usage(st, l, now)
  local used, reset = 0, 0
  if l.conc then
    used = redis.call('ZCOUNT', K[3], '(' .. s(now), '+inf')
    local last = redis.call('ZRANGE', K[3], -1, -1, 'WITHSCORES')
    if #last > 0 then reset = math.max(0, tonumber(last[2]) - now) end
  elseif l.bucket then
    local k, f = num(st, l.kf), num(st, l.ff)
    if k >= now and (k > now or f > 0) then
      local ahead = (k - now) * l.a + f
      used = -fdiv(-ahead, l.wg)
      reset = -fdiv(-ahead, l.a)
    end
  else
    flush_writes(st)
    local d = l.dim
    local total, base = num(st, T[d]), num(st, B[d])
    local from = valid_from(st, d)
    -- The first entry still in the window; the running total before it.
    local i = first_at_least(st, E_REACH, now - l.window + 1, 0)
    local before = base
    if i == nil then i = log_length(st) end
    if i > from then before = entry_index(i - 1)[E_CUM + d] end
    used = total - before
    if total > base then
      local _, last = first_at_least(st, E_CUM + d, total, from)
      if last then reset = math.max(0, last[E_REACH] + l.window - now) end
    end
  end
  return used, reset
end

-- The capacity of a limit: what one call may take at most.
local function capacity(l)
  if l.bucket then return l.burst end
  return l.amount
end

-- Moves the running totals of dimension d by delta from the lease at index `at` on: the entries
-- from it to the end of the log, or (equivalently) every entry before it and the base the other
-- way, whichever is fewer; only an increase can be placed when both sides are too long (charged
-- at the newest lease, which only overcounts). `lease` (entry of seq, at index `at`) is written
-- by the caller. Returns whether it was placed.
local function shift_totals(st, lease, seq, d, at, delta)
  local n = log_length(st)
  local after = n - at
  if after <= at and after <= SHIFT_BOUND then
    local later = entries_between(at + 1, n - 1)
    for _, e in ipairs(later) do e[E_CUM + d] = e[E_CUM + d] + delta end
    lease[E_CUM + d] = lease[E_CUM + d] + delta
    if #later > 0 then rewrite_tail(st, at + 1, later) end
    st[T[d]] = num(st, T[d]) + delta
  elseif at <= SHIFT_BOUND then
    local from = valid_from(st, d)
    if at > from then
      local earlier = entries_between(0, at - 1)
      for i = from + 1, #earlier do earlier[i][E_CUM + d] = earlier[i][E_CUM + d] - delta end
      rewrite_head(st, earlier)
    end
    st[B[d]] = num(st, B[d]) - delta
  elseif delta > 0 then
    local last = entry_index(n - 1)
    if last[E_SEQ] == seq then
      lease[E_CUM + d] = lease[E_CUM + d] + delta
    else
      last[E_CUM + d] = last[E_CUM + d] + delta
      redis.call('LSET', K[2], n - 1, pack_entry(last))
    end
    st[T[d]] = num(st, T[d]) + delta
  else
    return false
  end
  return true
end

-- Replaces the estimate of lease (the entry of seq) by its real usage (dimensions 1..3; false keeps
-- the estimate) in every limit it still weighs on: the running totals from it on, and the buckets
-- it was charged to within their span. Returns an error reply, or nil.
local function reconcile(st, limits, sliding, lease, seq, usage, now, retention)
  flush_writes(st)
  W.lease = lease
  local at = seq - num(st, 'h0')
  for d = 1, 3 do
    local new = usage[d]
    local old = lease[E_COST + d]
    if new and new ~= old and sliding[d] and new > old then
      local costs = { 0, 0, 0, 0 }
      costs[d + 1] = new - old
      -- As on the memory backend: a charge that would reach 2^53 keeps the estimate.
      if not totals_fit(st, sliding, costs, now, retention) then new = old end
      -- Pruning may have moved the head.
      at = seq - num(st, 'h0')
    end
    if new and new ~= old then -- false: keep the estimate
      local delta = new - old
      lease[E_COST + d] = new
      if sliding[d] and seq >= num(st, Z[d]) then
        if not shift_totals(st, lease, seq, d, at, delta) then
          lease[E_COST + d] = old -- a refund that cannot be placed exactly is not made
        end
        if num(st, T[d]) >= MAX_EXACT or num(st, B[d]) <= -MAX_EXACT then
          return redis.error_reply('sluice: running total beyond 2^53')
        end
      end
      for _, l in ipairs(limits) do
        if l.bucket and l.dim == d and lease[E_SLOT] + l.span > now then
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
            local n = log_length(st)
            if n - at - 1 <= SHIFT_BOUND then
              local later = entries_between(at + 1, n - 1)
              local acc_k, acc_f = 0, 0
              for j = #later, 1, -1 do
                local lj = later[j]
                acc_k, acc_f = pair_add_units(acc_k, acc_f, lj[E_COST + d] * l.wg, l.a)
                local tk, tf = pair_add_units(lj[E_SLOT] + acc_k, acc_f, 0, l.a)
                if pair_less(rk, rf, tk, tf) then rk, rf = tk, tf end
              end
              k, f = rk, rf
            end
          end
          st[ki], st[fi] = k, f
        end
      end
    end
  end
  redis.call('LSET', K[2], seq - num(st, 'h0'), pack_entry(lease))
  W.lease = nil
end

-- Queued slots (after now) that an active cooldown (ending at cooldown_end) covers move to its end, all by the same
-- amount, so queued workers keep their order and spacing (at most MAX_DEFERRED of them). When this
-- report lowered a budget (adopted or adaptive), they are booked again in order under it instead
-- (core Ledger::respace_queued), keeping their ids.
-- Returns an error reply, or nil.
local function move_queued(st, limits, sliding, now, cooldown_end, lowered)
  flush_writes(st)
  local first_i, first = first_at_least(st, E_REACH, now + 1, 0)
  local n = log_length(st)
  local delta = first and math.max(0, cooldown_end - first[E_REACH]) or 0
  -- At most MAX_DEFERRED leases (tombstones among them are not counted).
  if first and (lowered or delta > 0) and n - first_i <= MAX_DEFERRED + num(st, 'dd') then
    local queued = entries_between(first_i, n - 1)
    local leases = 0
    for _, e in ipairs(queued) do
      if e[E_RANK] ~= DEAD then leases = leases + 1 end
    end
    if leases > MAX_DEFERRED then return nil end
    local unreconciled = true
    for _, e in ipairs(queued) do unreconciled = unreconciled and not reconciled(e) end
    if lowered and unreconciled then
      step_out_of(st, limits, sliding, queued, function(f, v) st[f] = v end)
      -- Each is written back before the next is decided: the next one's window reads it.
      for qi, e in ipairs(queued) do
        local cost = { e[E_COST], e[E_COST + 1], e[E_COST + 2], e[E_COST + 3] }
        if e[E_RANK] ~= DEAD then
          local t, decider = earliest_on(st, limits, cost, e[E_SLOT] + delta, now, true)
          if t == nil then return redis.error_reply('sluice: inconsistent window state') end
          for _, l in ipairs(limits) do
            if l.bucket then
              local k, f = num(st, l.kf), num(st, l.ff)
              if k < t then k, f = t, 0 end
              k, f = pair_add_units(k, f, inflated(cost[l.dim + 1], limits.scale) * l.wg, l.a)
              st[l.kf], st[l.ff] = k, f
            elseif l.conc and redis.call('ZSCORE', K[3], s(e[E_SEQ])) then
              redis.call('ZADD', K[3], s(t + l.window), s(e[E_SEQ]))
            end
          end
          e[E_SLOT], e[E_DECIDER] = t, decider
          st.ls, st.ld = t, decider
        end
        -- A tombstone moves with the leases around it (its slot is its reach: a deferral moves
        -- both).
        if e[E_RANK] == DEAD then e[E_SLOT] = math.max(e[E_SLOT], num(st, 'ls')) end
        e[E_REACH] = math.max(e[E_SLOT], num(st, 'ls'))
        for d = 0, 3 do
          if sliding[d] and e[E_SEQ] >= num(st, Z[d]) then st[T[d]] = e[E_CUM + d] end
        end
        redis.call('LSET', K[2], first_i + qi - 1, pack_entry(e))
      end
      st.lm = nil
    elseif delta > 0 then
      for _, e in ipairs(queued) do
        e[E_SLOT] = e[E_SLOT] + delta
        e[E_REACH] = e[E_SLOT]
        local hold_end = e[E_RANK] ~= DEAD and redis.call('ZSCORE', K[3], s(e[E_SEQ]))
        if hold_end then redis.call('ZADD', K[3], s(tonumber(hold_end) + delta), s(e[E_SEQ])) end
      end
      st.ls = num(st, 'ls') + delta
      if num(st, 'lm') > now then st.lm = num(st, 'lm') + delta end
      for _, l in ipairs(limits) do
        if l.bucket then
          local k, f = num(st, l.kf), num(st, l.ff)
          if k > now or (k == now and f > 0) then st[l.kf] = k + delta end
        end
      end
      rewrite_tail(st, first_i, queued)
    end
    if first_i == 0 then st.hr = queued[1][E_REACH] end
  end
end

-- Acquire, for the batches of one or more services: for each service, its n requests in order;
-- for each, reserve the earliest slot at which its cost fits every limit, after the cooldown and
-- the last booked slot, if it is at most its max_wait away. Every request is decided at the same
-- `now` (per service: never before its state's high-water time), exactly as if they had come one
-- after the other; services are independent, so one call carries the acquires of many (a single
-- Redis: every service that is not a family member; a cluster: one service). A denial changes
-- nothing (one that could overtake may prune first).
-- KEYS: 9 per service, in order. ARGV 1 manual time, 2 most leases held, 3 number of services;
-- then per service: limits, retention µs, nonce for a new state, n, and 9 per request: cost c0,
-- c1, c2, c3, max_wait µs, request_id ('' for none), priority class rank and max_overtakes
-- (core/priority.rs: a call is booked ahead of the queued leases of lower classes, which are
-- booked again behind it), deadline (Redis µs; '' for none: past it the caller was answered with
-- an error, so nothing is booked and the reply is {'E'}, see deadline.rs).
-- Returns one reply per request, services in order: {'G', seq, slot, wait, decider, nonce} |
-- {'D', retry_after, decider} | {'R'} (request id reused with another cost) | {'F'} (too many
-- leases) | {'O'} (a running total would reach 2^53) | {'X', message} (every request of a
-- service whose state the script found inconsistent; the other services are decided).

local clock = now_micros()
local max_leases = tonumber(ARGV[2])
local PER_REQUEST = 9

-- Decides the n requests of service j (its keys become K), whose arguments start at ARGV[at].
-- Returns the replies, or an error reply.
local function decide_service(j, at)
  K = {}
  for i = 1, 9 do K[i] = KEYS[9 * (j - 1) + i] end
  local limits, sliding = parse_limits(ARGV[at])
  local retention = tonumber(ARGV[at + 1])
  local nonce = ARGV[at + 2]
  local n = tonumber(ARGV[at + 3])

  local st = read_state()
  local now = math.max(clock, num(st, 'hw'))
  forget_if_stale(st, now, retention, false)
  drop_unused_totals(st, sliding)
  apply_adopted(st, limits)
  apply_adaptive(st, limits, now)

  local held, created, wrote = nil, false, false
  -- Bookings of the batch are written once per key at the end (see defer_writes); until the first
  -- booking nothing is pending.
  defer_writes()

  local function earliest(cost, t0) return earliest_on(st, limits, cost, t0, now) end

  -- The queued leases at the end of the log a call of `rank` goes ahead of (core/priority.rs):
  -- lower classes, not started, with overtakes left, never reconciled, holding their in-flight slot
  -- if the service counts them; at most MAX_AHEAD; none while every in-flight slot is held. In log
  -- order, as {m, rec, hold}.
  local MAX_AHEAD = 64
  local function overtakable(rank)
    -- No queue, or the last lease is of this class or a higher one: nothing to go ahead of (and
    -- nothing read, so a batch's writes stay batched).
    if num(st, 'ls') <= now or num(st, 'lr') <= rank then return {} end
    -- A scaled bucket charges by the scale of the moment (core Ledger::overtakable).
    if limits.scale < FULL then return {} end
    for _, l in ipairs(limits) do
      if l.conc and redis.call('ZCOUNT', K[9], '(' .. s(now), '+inf') >= l.amount then return {} end
    end
    flush_writes(st)
    local queued = redis.call('ZREVRANGEBYSCORE', K[2], '+inf', '(' .. s(now), 'LIMIT', 0, MAX_AHEAD)
    local behind = {}
    for _, q in ipairs(queued) do
      local rec = parse_lease(redis.call('HGET', K[3], q))
      local hold = redis.call('ZSCORE', K[9], q)
      local same = rec.rank > rank and rec.left > 0 and (hold ~= false) == (sliding.holds == true)
      for d = 1, 4 do same = same and rec.cost[d] == rec.requested[d] end
      if not same then break end
      table.insert(behind, 1, { m = q, rec = rec, hold = hold })
    end
    return behind
  end

  -- Takes `behind` out of the state the decision reads (st's totals, last slot and buckets; its
  -- held slots need not leave: an overtake needs a free one anyway); returns what to put back if
  -- nothing is booked. Writes nothing.
  local function step_out(behind)
    local saved = { fields = {} }
    step_out_of(st, limits, sliding, behind, function(f, v)
      if saved.fields[f] == nil then saved.fields[f] = st[f] or false end
      st[f] = v
    end)
    return saved
  end

  local function step_back(saved)
    for f, v in pairs(saved.fields) do st[f] = v or nil end
  end

  -- Housekeeping once per batch, before the first write: prune, and bound the leases held. The
  -- log holds at most the leases ever booked on this state (q), so it is counted only once that
  -- bound could reach max_leases (see room_for_a_lease).
  local held_exact = false
  local function housekeeping()
    if held == nil then
      created = prune(st, now, retention, sliding, fdiv(retention, 8))
      held = created and 0 or num(st, 'q')
      held_exact = created
    end
  end

  -- Whether fewer than max_leases leases are held, counting them if the bound says no.
  local function room_for_a_lease()
    if held >= max_leases and not held_exact then
      flush_writes(st)
      held = redis.call('ZCARD', K[2])
      held_exact = true
    end
    return held < max_leases
  end

  local function acquire_one(cost, max_wait, rid, rank, max_overtakes, deadline)
    if deadline and now > deadline then return { 'E' } end
    -- A retried acquire returns its lease while the lease is held.
    if rid ~= '' then
      local m = pending.rid_of[rid] or redis.call('HGET', K[4], rid)
      local rec = m and (pending.lease_of[m] or redis.call('HGET', K[3], m))
      if rec then
        local lease = parse_lease(rec)
        if (pending.lease_of[m] or retained(lease.slot, m, now, retention)) and replayable(sliding, m, now) then
          for d = 1, 4 do
            if lease.requested[d] ~= cost[d] then return { 'R' } end
          end
          return { 'G', s(tonumber(m)), s(lease.slot), s(math.max(0, lease.slot - now)), lease.decider, st.n }
        end
      end
    end

    -- Over the whole log, before any lease steps out (they are booked again after it).
    if not totals_fit(st, sliding, cost, now, retention) then return { 'O' } end
    local behind = overtakable(rank)
    -- An overtake reads the state with the leases it goes ahead of taken out: prune first, so the
    -- housekeeping never writes that view back.
    if #behind > 0 then housekeeping() end
    local saved = #behind > 0 and step_out(behind)
    local t, decider, held_back = earliest(cost, now)
    if t == nil then return redis.error_reply('sluice: inconsistent window state') end
    local wait = t - now
    -- A slot only a lease timeout would free is not booked (a report may free one sooner).
    if wait > max_wait or held_back then
      if saved then step_back(saved) end
      return { 'D', s(wait), decider }
    end

    -- Book: from here on, writes.
    housekeeping()
    if not room_for_a_lease() then
      if saved then step_back(saved) end
      return { 'F' }
    end
    if not st.n then
      st.n = nonce
      redis.call('HSET', K[1], 'n', st.n)
    end
    if saved then
      -- The leases it goes ahead of leave the log; they are booked again behind it, with new ids.
      local members = {}
      for _, b in ipairs(behind) do members[#members + 1] = b.m end
      redis.call('ZREM', K[2], unpack(members))
      redis.call('HDEL', K[3], unpack(members))
      if sliding.holds then redis.call('ZREM', K[9], unpack(members)) end
      for d = 0, 3 do
        if sliding[d] or st[T[d]] then redis.call('ZREM', K[5 + d], unpack(members)) end
      end
    end
    local seq = book(st, limits, sliding, now, t, cost, decider, rid, true, nil, rank, max_overtakes)
    if type(seq) == 'table' then return seq end
    held = held + 1
    wrote = true
    for _, b in ipairs(behind) do
      local tb, db = earliest(b.rec.cost, math.max(now, b.rec.slot))
      if tb == nil then return redis.error_reply('sluice: inconsistent window state') end
      local again = book(st, limits, sliding, now, tb, b.rec.cost, db, b.rec.rid, b.hold ~= false, nil,
        b.rec.rank, b.rec.left - 1)
      if type(again) == 'table' then return again end
    end
    return { 'G', s(seq), s(t), s(wait), decider, st.n }
  end

  local replies = {}
  for r = 1, n do
    local base = at + 4 + PER_REQUEST * (r - 1)
    local cost = { tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
      tonumber(ARGV[base + 3]) }
    local reply = acquire_one(cost, tonumber(ARGV[base + 4]), ARGV[base + 5],
      tonumber(ARGV[base + 6]), tonumber(ARGV[base + 7]), tonumber(ARGV[base + 8]))
    if reply.err then return reply end
    replies[r] = reply
  end
  if wrote then
    flush_writes(st)
    expire_all(st, now, retention, created)
  end
  return replies
end

local replies = {}
local at = 4
for j = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[at + 3])
  local decided = decide_service(j, at)
  for r = 1, n do
    replies[#replies + 1] = decided.err and { 'X', decided.err } or decided[r]
  end
  at = at + 4 + PER_REQUEST * n
end
return replies

-- Acquire, for the batches of one or more services: for each service, its n requests in order;
-- for each, reserve the earliest slot at which its cost fits every limit, after the cooldown and
-- the last booked slot, if it is at most its max_wait away. Every request is decided at the same
-- `now` (per service: never before its state's high-water time), exactly as if they had come one
-- after the other; services are independent, so one call carries the acquires of many (a single
-- Redis: every service that is not a family member; a cluster: one service). A denial changes
-- nothing (one that could overtake may prune first).
-- KEYS: 3 per service, in order. ARGV 1 manual time, 2 most leases held, 3 number of services;
-- then per service: limits, retention µs, nonce for a new state, n, and its n requests packed
-- with struct (NUMBERS for each, then each one's request id, '' for none): cost c0, c1, c2, c3,
-- max_wait µs, priority class rank and max_overtakes (core/priority.rs: a call is booked ahead of
-- the queued leases of lower classes, which are booked again behind it), deadline (Redis µs; -1
-- for none: past it the caller was answered with an error, so nothing is booked and the reply is
-- {'E'}, see deadline.rs).
-- Returns one reply per request, services in order, in one flat array (emit: each reply's length,
-- then its elements): {'G', seq, slot, wait, decider, nonce} | {'D', retry_after, decider} |
-- {'R'} (request id reused with another cost) | {'F'} (too many leases) | {'O'} (a running total
-- would reach 2^53) | {'X', message} (every request of a service whose state the script found
-- inconsistent; the other services are decided).

local clock = now_micros()
local max_leases = tonumber(ARGV[2])
-- Nothing to go ahead of (shared: never written to).
local NONE = {}
-- At most this many queued leases are booked again behind a call of a higher class.
local MAX_AHEAD = 64

-- The service being decided (set by decide_service for the functions below), and tables every
-- service of the call reuses: its keys and a request's cost.
local st, limits, sliding, now, retention, w, housekept, created
-- The flat array of replies (emit) the service's grants go to.
local out
local keys, cost = {}, { 0, 0, 0, 0 }

-- The queued leases at the end of the log a call of `rank` goes ahead of (core/priority.rs):
-- lower classes, not started, with overtakes left, never reconciled, holding their in-flight slot
-- if the service counts them; at most MAX_AHEAD; none while every in-flight slot is held. In log
-- order, as entries (with .hold: the end of the in-flight slot, or false); tombstones of earlier
-- overtakes are passed over (they stay in the list, flagged .dead, so that it is the log's tail).
local function overtakable(rank)
  -- No queue, or the last lease is of this class or a higher one: nothing to go ahead of (and
  -- nothing read, so a batch's writes stay batched).
  if (st.ls or 0) <= now or (st.lr or 0) <= rank then return NONE end
  -- A scaled bucket charges by the scale of the moment (core Ledger::overtakable).
  if limits.scale < FULL then return NONE end
  for _, l in ipairs(limits) do
    if l.conc and redis.call('ZCOUNT', K[3], '(' .. s(now), '+inf') >= l.amount then return NONE end
  end
  flush_writes(st)
  local behind, leases = {}, 0
  local at = log_length(st)
  while leases < MAX_AHEAD and at > 0 do
    local raws = redis.call('LRANGE', K[2], math.max(0, at - MAX_AHEAD), at - 1)
    at = math.max(0, at - MAX_AHEAD)
    for i = #raws, 1, -1 do
      local e = unpack_entry(raws[i])
      if e[E_REACH] <= now then break end
      if e[E_RANK] == DEAD then
        e.dead = true
      else
        local hold = false
        if sliding.holds then
          hold = redis.call('ZSCORE', K[3], s(e[E_SEQ]))
          hold = hold and tonumber(hold) or false
        end
        local same = e[E_RANK] > rank and e[E_LEFT] > 0
          and (hold ~= false) == (sliding.holds == true) and not reconciled(e)
        if not same or leases == MAX_AHEAD then at = -1; break end
        e.hold = hold
        leases = leases + 1
      end
      table.insert(behind, 1, e)
    end
    if #raws > 0 and unpack_entry(raws[1])[E_REACH] <= now then break end
  end
  if leases == 0 then return NONE end
  return behind
end

-- Takes `behind` out of the state the decision reads (st's totals, last slot and buckets; its
-- held slots need not leave: an overtake needs a free one anyway); returns what to put back if
-- nothing is booked. Writes nothing.
local function step_out(behind)
  local saved = {}
  step_out_of(st, limits, sliding, behind, function(f, v)
    if saved[f] == nil then saved[f] = st[f] or false end
    st[f] = v
  end)
  return saved
end

local function step_back(saved)
  for f, v in pairs(saved) do st[f] = v or nil end
end

-- Housekeeping once per batch, before the first write: prune (which says whether the log was
-- empty: the list key is then created again, and needs its TTL).
local function housekeeping()
  if not housekept then
    housekept = true
    created = prune(st, now, retention, sliding, fdiv(retention, 2))
  end
end

local function acquire_one(cost, max_wait, rid, rank, max_overtakes, deadline)
  if deadline >= 0 and now > deadline then return { 'E' } end
  -- A retried acquire returns its lease while the lease is held.
  if rid ~= '' then
    local seq, e = lease_of_request(st, rid)
    if e and (w.entry_of[seq] or retained(e, now, retention)) and replayable(sliding, seq, now) then
      if not asked_for(e, cost) then return { 'R' } end
      return { 'G', seq, e[E_SLOT], mmax(0, e[E_SLOT] - now), e[E_DECIDER], st.n }
    end
  end

  -- Over the whole log, before any lease steps out (they are booked again after it).
  if not totals_fit(st, sliding, cost, now, retention) then return { 'O' } end
  local behind = overtakable(rank)
  local saved = false
  if #behind > 0 then
    -- An overtake reads the state with the leases it goes ahead of taken out: prune first, so
    -- the housekeeping never writes that view back.
    housekeeping()
    saved = step_out(behind)
  end
  local t, decider, held_back = earliest_on(st, limits, cost, now, now)
  if t == nil then return redis.error_reply('sluice: inconsistent window state') end
  local wait = t - now
  -- A slot only a lease timeout would free is not booked (a report may free one sooner).
  if wait > max_wait or held_back then
    if saved then step_back(saved) end
    return { 'D', wait, decider }
  end

  -- Book: from here on, writes.
  housekeeping()
  if leases_held(st) >= max_leases then
    if saved then step_back(saved) end
    return { 'F' }
  end
  if not st.n then st.n = w.nonce end
  if saved then
    -- The leases it goes ahead of leave the log (tombstones keep their places); they are booked
    -- again behind it, with new ids.
    flush_writes(st)
    bury_tail(st, #behind)
    if sliding.holds then
      local seqs = {}
      for _, b in ipairs(behind) do
        if not b.dead then seqs[#seqs + 1] = s(b[E_SEQ]) end
      end
      if #seqs > 0 then redis.call('ZREM', K[3], unpack(seqs)) end
    end
  end
  local seq = book(st, limits, sliding, now, t, cost, decider, rid, true, nil, rank, max_overtakes)
  if type(seq) == 'table' then return seq end
  for _, b in ipairs(behind) do
    if not b.dead then
      local bcost = { b[E_COST], b[E_COST + 1], b[E_COST + 2], b[E_COST + 3] }
      local tb, db = earliest_on(st, limits, bcost, math.max(now, b[E_SLOT]), now)
      if tb == nil then return redis.error_reply('sluice: inconsistent window state') end
      local again = book(st, limits, sliding, now, tb, bcost, db, b[E_RID], b.hold ~= false, nil,
        b[E_RANK], b[E_LEFT] - 1)
      if type(again) == 'table' then return again end
    end
  end
  emit_grant(out, seq, t, wait, decider, st.n)
  return nil
end

-- Decides the n requests of service j (its keys become K), whose arguments start at ARGV[at],
-- into `replies` (emit). Returns an error reply, or nil.
local function decide_service(j, at, n, replies)
  local k = 3 * j
  out = replies
  keys[1], keys[2], keys[3] = KEYS[k - 2], KEYS[k - 1], KEYS[k]
  K = keys
  limits, sliding = parse_limits(ARGV[at])
  retention = tonum(ARGV[at + 1])
  -- The requests' ids are looked up with the state, in one command.
  local packed = ARGV[at + 4]
  local ids = request_ids(packed, n)
  local known
  st, known = read_state(false, ids, n)
  now = mmax(clock, st.hw or 0)
  -- Bookings of the batch are written once per key at the end (see flush_writes); the state too.
  w = begin_writes(st, known)
  w.nonce = ARGV[at + 2]
  housekept, created = false, false
  forget_if_stale(st, now, retention, false)
  drop_unused_totals(st, sliding)
  apply_adopted(st, limits)
  apply_adaptive(st, limits, now)

  for r = 1, n do
    local c0, c1, c2, c3, max_wait, rank, max_overtakes, deadline =
      sunpack(NUMBERS, packed, NUMBERS_SIZE * (r - 1) + 1)
    cost[1], cost[2], cost[3], cost[4] = c0, c1, c2, c3
    local reply = acquire_one(cost, max_wait, n == 1 and ids or ids[r], rank, max_overtakes,
      deadline)
    -- A new grant went to `out` already.
    if reply then
      if reply.err then return reply end
      emit(replies, reply)
    end
  end
  if w.dirty then
    flush_writes(st, true)
    expire_all(st, now, retention, created)
    write_state(st)
  end
  return nil
end

local replies = {}
local at = 4
for j = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[at + 3])
  local first = #replies
  local err = decide_service(j, at, n, replies)
  if err then
    for i = #replies, first + 1, -1 do replies[i] = nil end
    for _ = 1, n do emit(replies, { 'X', err.err }) end
  end
  at = at + 5
end
return replies

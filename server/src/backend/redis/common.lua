-- Shared by every Sluice script (the function library's prelude, or put in front of each script
-- for EVAL). The whole data layout and protocol (keys, state fields, lease entries, decider codes,
-- each script's ARGV and reply) is LAYOUT.md, beside this file; what follows is the summary the
-- code is read with. Semantics are those of the memory backend's Ledger
-- (server/src/core/ledger/); all numbers are integers below 2^53, exact in Lua's doubles.
--
-- KEYS (one hash tag, so one cluster slot; a family's acquire passes 4 keys per member and works
-- on one member's at a time through K):
--   1 state   string: the service's state, a MessagePack map (fields in LAYOUT.md), numbers kept
--             as numbers; read once (GET) and written once (SET) per call
--   2 log     list: one MessagePack entry per lease in booking order (see E_* below); the lease
--             with sequence number seq is at index seq - h0 (h0: the head's seq, in the state)
--   3 ids     hash: request id -> seq of its lease, while the lease is retained
--   4 held    zset: seq -> end of the in-flight slot the lease holds (a concurrent limit)
-- ARGV (common): 1 manual time ('' reads TIME), 2 limits (7 numbers each: dim kind amount
--   window burst A Wg; kind 0 sliding, 1 bucket, 2 sliding adopting provider budgets,
--   3 calls in flight, whose window is the lease timeout, 4 bucket adopting provider budgets),
--   3 retention µs, 4 nonce for a new state. A last entry of kind 5 is no limit: the service's
--   budgets adapt to its 429s (core/adaptive.rs), over the quiet period in its window field.

-- The keys of the service being worked on: KEYS, or one family member's share of them (see
-- family.lua).
local K = KEYS

-- State field names by dimension d (0..3): cooldown until/status/source, base and running total,
-- the first seq whose running total of d is valid (z), the window search hint prefix.
local CU, CS, CC, B, T, Z = {}, {}, {}, {}, {}, {}
for d = 0, 3 do
  CU[d], CS[d], CC[d], B[d], T[d], Z[d] = 'cu' .. d, 'cs' .. d, 'cc' .. d, 'b' .. d, 't' .. d, 'z' .. d
end

-- A log entry is packed with `struct` (ENTRY): seq, slot, reach (the latest slot booked up to it:
-- its slot, except in a family's ancestor, where a member's call may sit behind a sibling's
-- queued one), the priority rank, the request id ('' for none), the cost booked in dimensions
-- 0..3 (after reconciling with real usage), the running totals of dimensions 0..3 up to and
-- including it, the overtakes left, the costs requested in dimensions 0..3, the decider code and
-- the uplinks (a family member's leases in its ancestors, "nonce:seq,…", or ''). Unpacked, an
-- entry is a table indexed by the E_* positions. A lease an overtake booked again leaves a
-- tombstone in its place (rank -1, no cost, the slot, reach, totals and decider of the entry
-- before it) so that indexes keep following seqs. Pruning reads only the head of an entry
-- (HEAD: seq, slot, reach, rank, request id).
local ENTRY = '<ddddHc0dddddddddddddHc0Hc0'
local HEAD = '<ddddHc0'
local E_SEQ, E_SLOT, E_REACH, E_RANK, E_RID, E_COST, E_CUM, E_LEFT, E_REQ, E_DECIDER, E_UP =
  1, 2, 3, 4, 5, 6, 10, 14, 15, 19, 20
local DEAD = -1

local PRUNE_BATCH = 128
local SHIFT_BOUND = 1024
local MAX_DEFERRED = 1024
local MAX_EXACT = 9007199254740992

-- The libraries, bound at the start of every call (bind_libs): a function library's loading code
-- may not read the globals its functions get. The state is a MessagePack map; log entries are
-- packed with struct (see ENTRY).
local pack_state, unpack_state, spack, sunpack
-- The functions the hot paths call, as locals (a global is two table lookups).
local rcall, mmax, tonum
local function bind_libs()
  pack_state, unpack_state = cmsgpack.pack, cmsgpack.unpack
  spack, sunpack = struct.pack, struct.unpack
  rcall, mmax, tonum = redis.call, math.max, tonumber
end

local function pack_entry(e)
  local rid, dec, up = e[E_RID], e[E_DECIDER], e[E_UP]
  return spack(ENTRY, e[1], e[2], e[3], e[4], #rid, rid, e[6], e[7], e[8], e[9], e[10], e[11],
    e[12], e[13], e[14], e[15], e[16], e[17], e[18], #dec, dec, #up, up)
end

local function unpack_entry(raw)
  return { sunpack(ENTRY, raw) }
end

-- An integer as text (zero, the most common value by far, without formatting).
local function s(x)
  if x == 0 then return '0' end
  return string.format('%d', x)
end

local function now_micros()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Exact floor(x / y) for integers, y > 0, |x| < 2^53.
local function fdiv(x, y)
  local q = math.floor(x / y)
  while q * y > x do q = q - 1 end
  while (q + 1) * y <= x do q = q + 1 end
  return q
end

-- What a limits text says, read once per text: a call deciding many services of the same shape
-- splits it once (and, in the function library, which outlives a call, so do later calls; at most
-- MAX_SHAPES texts are kept). Each entry is {templates, sliding, period, fixed}; parse_limits
-- hands out fresh copies of the templates where a service's limits are adjusted in place
-- (adopted and adaptive amounts); the table of sliding dimensions is shared (never changed).
local read_limits, shapes_read = {}, 0
local MAX_SHAPES = 1024

local function limit_templates(text)
  local words = {}
  for v in string.gmatch(text, '%S+') do words[#words + 1] = v end
  local templates, sliding, period = {}, {}, nil
  for i = 1, #words, 7 do
    local kind = tonumber(words[i + 1])
    local l = { dim = tonumber(words[i]), bucket = kind == 1, adopt = kind == 2,
      amount = tonumber(words[i + 2]), window = tonumber(words[i + 3]),
      burst = tonumber(words[i + 4]), a = tonumber(words[i + 5]), wg = tonumber(words[i + 6]) }
    if kind == 1 or kind == 4 then
      local id = words[i] .. '_' .. words[i + 3] .. '_' .. words[i + 2] .. '_' .. words[i + 4]
      l.bucket = true
      l.kf, l.ff = 'k' .. id, 'f' .. id
      if kind == 4 then
        -- Adopting provider budgets: the state means another rate once one is adopted, so it is
        -- kept apart from a plain bucket's (a reload that turns adoption off starts it full).
        l.kf, l.ff, l.abf = 'ka' .. id, 'fa' .. id, 'ab' .. id
      end
      l.span = math.max(l.window, math.ceil(l.burst * l.window / l.amount))
    elseif kind == 5 then
      period = l.window
      l = nil
    elseif kind == 3 then
      l.conc = true
      l.span = l.window
      -- Only a service with an in-flight limit prunes its holds.
      sliding.holds = true
    else
      l.af = 'am' .. words[i] .. '_' .. words[i + 3]
      l.hint = 'w' .. words[i] .. '_' .. words[i + 3]
      l.span = l.window
      sliding[l.dim] = true
    end
    if l then
      templates[#templates + 1] = l
      -- What a decision names it by (LAYOUT.md, decider codes), and its dimension's totals.
      l.code = tostring(#templates - 1)
      l.tf, l.bf = 't' .. words[i], 'b' .. words[i]
    end
  end
  -- Amounts change in place only where budgets are adopted or adaptive (apply_adopted,
  -- apply_adaptive, report.lua); other shapes are read as they are, never copied.
  local fixed = period == nil
  for _, l in ipairs(templates) do fixed = fixed and not l.adopt and not l.abf end
  local windows_only = true
  for _, l in ipairs(templates) do windows_only = windows_only and not l.bucket and not l.conc end
  local shared = nil
  if fixed then
    shared = { shared = true, scale = 1000, windows_only = windows_only }
    for i, l in ipairs(templates) do shared[i] = l end
  end
  return { templates, sliding, period, shared, windows_only }
end

local function parse_limits(text)
  local entry = read_limits[text]
  if not entry then
    entry = limit_templates(text)
    if shapes_read >= MAX_SHAPES then read_limits, shapes_read = {}, 0 end
    read_limits[text] = entry
    shapes_read = shapes_read + 1
  end
  -- Which dimensions have a sliding limit is never changed: shared; so are limits no call
  -- changes (the whole list: never written to).
  if entry[4] then return entry[4], entry[2] end
  local limits = { period = entry[3], windows_only = entry[5] }
  for i, template in ipairs(entry[1]) do
    local t = template
    limits[i] = { dim = t.dim, bucket = t.bucket, adopt = t.adopt, conc = t.conc, amount = t.amount,
      window = t.window, burst = t.burst, a = t.a, wg = t.wg, span = t.span, kf = t.kf, ff = t.ff,
      abf = t.abf, af = t.af, hint = t.hint, code = t.code, tf = t.tf, bf = t.bf }
  end
  return limits, entry[2]
end

-- The writes of the service being worked on (see begin_writes): lease entries and request ids
-- are collected and sent as one command per key (flush_writes), the state is written once at the
-- end (write_state) if anything changed it.
local W = nil

local function begin_writes(st)
  W = { log = {}, rids = {}, entry_of = {}, rid_of = {}, rid_ttl = false,
    dirty = st ~= nil and st.migrated == true }
  return W
end

-- Converts a state an earlier release wrote (upgrade.lua).
local migrate_old

-- Reads the state: a table of numbers and texts, empty for a service Redis does not hold. One
-- an earlier release wrote is converted first, unless `read_only` (then it reads as empty); the
-- caller must then write it (field `migrated`).
local function read_state(read_only)
  local raw = rcall('GET', K[1])
  if raw then return unpack_state(raw) end
  local st = not read_only and migrate_old()
  -- Written for the first time: with its TTL (write_state).
  return st or { new = true }
end

local function num(st, field)
  return st[field] or 0
end

-- Writes the state: with the TTL every key of the service runs to (field ex) when that moved
-- (expire_all) or the key is new, else keeping the TTL it has.
local function write_state(st)
  st.migrated = nil
  if W and not W.ttl_moved and st.ex and not st.new then
    rcall('SET', K[1], pack_state(st), 'KEEPTTL')
  elseif st.ex then
    st.new = nil
    rcall('SET', K[1], pack_state(st), 'PXAT', math.ceil(st.ex / 1000))
  else
    st.new = nil
    rcall('SET', K[1], pack_state(st))
  end
end

-- Leases in the log (tombstones included) and leases held.
local function log_length(st) return (st.q or 0) - (st.h0 or 0) end
local function leases_held(st) return (st.q or 0) - (st.h0 or 0) - (st.dd or 0) end

-- Adaptive budgets (core/adaptive.rs): the scale in permille, from the last throttle's scale (ps),
-- the scale it came at (pp) and its time (pt): each quiet period halves the gap up to pp, then
-- adds STEP.
local FULL, STEP, MAX_INFLATED = 1000, 50, 4503599627370496
-- How many halvings bring gap to 0.
local function halvings(gap)
  local h = 0
  while gap > 0 do gap = fdiv(gap, 2); h = h + 1 end
  return h
end
local function adaptive_scale(st, limits, now)
  local sc = num(st, 'ps')
  if not limits.period or sc == 0 then return FULL end
  local steps = fdiv(math.max(0, now - num(st, 'pt')), limits.period)
  local peak = math.max(num(st, 'pp'), sc)
  local gap = peak - sc
  local h = halvings(gap)
  if steps < h then return peak - fdiv(gap, 2 ^ steps) end
  return math.min(FULL, peak + (steps - h) * STEP)
end
-- How many quiet periods after the last throttle the scale is whole again (core
-- Adaptive::periods_to_full).
local function periods_to_full(st)
  local sc = num(st, 'ps')
  if sc == 0 or sc >= FULL then return 0 end
  local peak = math.min(FULL, math.max(num(st, 'pp'), sc))
  return halvings(peak - sc) - fdiv(-(FULL - peak), STEP)
end

-- x × sc / 1000, rounded down.
local function share(x, sc)
  if sc >= FULL then return x end
  local q = fdiv(x, 1000)
  return q * sc + fdiv((x - q * 1000) * sc, 1000)
end

-- An amount at scale sc: at least 1.
local function scaled(x, sc)
  if sc >= FULL then return x end
  return math.max(1, share(x, sc))
end

-- What cost c is charged to a token bucket at scale sc: c × 1000 / sc rounded up, at most 2^52.
local function inflated(c, sc)
  if sc >= FULL or c == 0 then return c end
  local q = fdiv(c, sc)
  if q > fdiv(MAX_INFLATED, 1000) then return MAX_INFLATED end
  return math.min(MAX_INFLATED, q * 1000 - fdiv(-((c - q * sc) * 1000), sc))
end

-- Puts the adaptive scale in force at now on the limits: sliding windows' amounts (from their
-- base, the amount before scaling) and limits.scale for the buckets' costs.
local function apply_adaptive(st, limits, now)
  -- Shared limits (no adaptive or adopted budget) keep the configured amounts, at full scale.
  if limits.shared then return end
  local sc = adaptive_scale(st, limits, now)
  limits.scale = sc
  for _, l in ipairs(limits) do
    if not l.bucket and not l.conc then
      l.base = l.base or l.amount
      l.amount = scaled(l.base, sc)
    end
  end
end

-- Sets a bucket's shape: amount, burst, reduced A and Wg (its TAT moves Wg / A µs per token).
local function set_shape(l, amount, burst, a, wg)
  l.amount, l.burst, l.a, l.wg = amount, burst, a, wg
  l.span = math.max(l.window, math.ceil(l.burst * l.window / l.amount))
end

-- Puts adopted provider budgets in place of the configured amounts: a sliding limit's amount,
-- a bucket's whole shape ({amount, burst, A, Wg}).
local function apply_adopted(st, limits)
  if limits.shared then return end
  for _, l in ipairs(limits) do
    local am = l.adopt and st[l.af]
    if am then l.amount = am end
    local ab = l.abf and st[l.abf]
    if ab then set_shape(l, ab[1], ab[2], ab[3], ab[4]) end
  end
end

-- The log entry of lease seq, booked by this call and not yet written, or in the log; nil for a
-- seq the log does not hold (pruned, never booked, or a tombstone).
local function entry_at(st, seq)
  local raw = W and W.entry_of[seq]
  if raw then return unpack_entry(raw) end
  local i = seq - num(st, 'h0')
  if i < 0 or seq >= num(st, 'q') then return nil end
  raw = rcall('LINDEX', K[2], i)
  if not raw then return nil end
  local e = unpack_entry(raw)
  if e[E_SEQ] ~= seq or e[E_RANK] == DEAD then return nil end
  return e
end

-- The entry at index i of the log (written entries only); nil if the log has none there (an
-- inconsistent state).
local function entry_index(i)
  local raw = redis.call('LINDEX', K[2], i)
  return raw and unpack_entry(raw) or nil
end

-- Index (0-based) of the first entry at or after index `from` whose field f is at least v, and
-- that entry; nil when there is none. Field f must never decrease along the log from `from` on
-- (reach does not; a running total does not from its dimension's z on). Starts near `hint` (an
-- index) when given: a window's boundary moves little from one decision to the next.
local function first_at_least(st, f, v, from, hint)
  local n = log_length(st)
  if n <= from then return nil end
  local lo, hi = from, n - 1
  local last = entry_index(hi)
  if last == nil or last[f] < v then return nil end
  local found = last
  -- Answer in [lo, hi]; the entry at hi passes.
  if hint and hint >= lo and hint < hi then
    local span = math.min(8, hi - hint)
    local raws = redis.call('LRANGE', K[2], hint, hint + span - 1)
    local first = unpack_entry(raws[1])
    if first[f] >= v then
      hi, found = hint, first
    else
      lo = hint + 1
      for j = 2, #raws do
        local e = unpack_entry(raws[j])
        if e[f] >= v then return hint + j - 1, e end
        lo = hint + j
      end
    end
  end
  while lo < hi do
    local mid = fdiv(lo + hi, 2)
    local e = entry_index(mid)
    if e == nil then return nil end
    if e[f] >= v then hi, found = mid, e else lo = mid + 1 end
  end
  return hi, found
end

-- Whether lease e (an entry) is still in the log at now: within its retention after its slot or
-- its reach (which in a family's ancestor may be later than its slot), as the memory backend
-- prunes.
local function retained(e, now, retention)
  return e[E_SLOT] + retention > now or e[E_REACH] + retention > now
end

-- Whether lease e's cost was reconciled with real usage (differs from what was requested).
local function reconciled(e)
  return e[E_COST] ~= e[E_REQ] or e[E_COST + 1] ~= e[E_REQ + 1] or e[E_COST + 2] ~= e[E_REQ + 2]
    or e[E_COST + 3] ~= e[E_REQ + 3]
end

-- Whether lease seq still holds its in-flight slot at now (services with an in-flight limit): a
-- retried acquire gets a lease back only then; otherwise the retry is a new call.
local function replayable(sliding, seq, now)
  if not sliding.holds then return true end
  local e = redis.call('ZSCORE', K[4], s(seq))
  return e ~= false and e ~= nil and tonumber(e) > now
end

-- Sends the writes collected so far (the state is written by write_state).
local function flush_writes(st)
  if not W then return end
  if #W.log > 0 then
    rcall('RPUSH', K[2], unpack(W.log))
    W.log, W.entry_of = {}, {}
  end
  if #W.rids > 0 then
    st.ri = (st.ri or 0) + rcall('HSET', K[3], unpack(W.rids))
    if W.rid_ttl then
      -- The request-id hash was (re)created since the TTLs were last set.
      rcall('PEXPIREAT', K[3], math.ceil(st.ex / 1000))
      st.rx = 1
      W.rid_ttl = false
    end
    W.rids, W.rid_of = {}, {}
  end
end

-- Drops leases whose longest span has passed and expired cooldowns. Leases go in batches of
-- at most PRUNE_BATCH, and only once the oldest has been past its span for `slack` µs, so one
-- call prunes many leases with a few commands instead of every call pruning one: expired leases
-- change no decision (window sums are taken over slots, not over what is stored). Reads the
-- head of each entry only (HEAD), in chunks. Updates st in place. Returns whether the log is
-- empty after it.
local PRUNE_CHUNK = 32
local function prune(st, now, retention, sliding, slack)
  local hr = st.hr
  if hr and hr + retention + slack <= now then
    flush_writes(st)
    W.dirty = true
    local limit = now - retention
    local k, rids, seqs, dead, last = 0, {}, {}, 0, nil
    hr = nil
    while k < PRUNE_BATCH and hr == nil do
      local raws = rcall('LRANGE', K[2], k, k + PRUNE_CHUNK - 1)
      for i = 1, #raws do
        local seq, _, reach, rank, rid = sunpack(HEAD, raws[i])
        if reach > limit then hr = reach; break end
        k, last = k + 1, raws[i]
        if rid ~= '' then rids[#rids + 1] = rid; seqs[#seqs + 1] = seq end
        if rank == DEAD then dead = dead + 1 end
      end
      if #raws < PRUNE_CHUNK then break end
    end
    if k == 0 then
      -- The head was booked again later than the state says (a respaced or deferred queue).
      st.hr = hr
      return false
    end
    last = unpack_entry(last)
    rcall('LTRIM', K[2], k, -1)
    if #rids > 0 then
      local current = rcall('HMGET', K[3], unpack(rids))
      local gone = {}
      for i, v in ipairs(current) do
        if v and tonumber(v) == seqs[i] then gone[#gone + 1] = rids[i] end
      end
      if #gone > 0 then
        st.ri = (st.ri or 0) - rcall('HDEL', K[3], unpack(gone))
        -- An emptied hash is deleted, and its TTL with it.
        if st.ri <= 0 then st.ri, st.rx = nil, 0 end
      end
    end
    st.h0 = num(st, 'h0') + k
    st.dd = num(st, 'dd') - dead
    if st.dd == 0 then st.dd = nil end
    if hr == nil and st.h0 < num(st, 'q') then
      local head = entry_index(0)
      hr = head and head[E_REACH] or 0
    end
    st.hr = hr
    -- Every dimension, not only those with a sliding limit now (drop_unused_totals clears a
    -- dimension whose limit a reload took away).
    for d = 0, 3 do
      if st[T[d]] and last[E_SEQ] >= num(st, Z[d]) then st[B[d]] = last[E_CUM + d] end
    end
    if hr == nil then
      -- An empty log restarts the running totals at zero, so they never grow without bound.
      for d = 0, 3 do
        if st[T[d]] then st[B[d]], st[T[d]] = 0, 0 end
        st[Z[d]] = nil
      end
    end
  end
  if sliding.holds then redis.call('ZREMRANGEBYSCORE', K[4], '-inf', s(now)) end
  for d = 0, 3 do
    local cu = st[CU[d]]
    if cu and cu <= now then
      st[CU[d]], st[CS[d]], st[CC[d]] = nil, nil, nil
      W.dirty = true
    end
  end
  return st.hr == nil
end

-- Running totals of a dimension without a sliding limit (a reload took it away) are dropped: they
-- stopped following the leases, so a sliding limit added back later starts from empty totals
-- (from the next seq on: field z<d>) instead of from stale ones.
local function drop_unused_totals(st, sliding)
  for d = 0, 3 do
    if not sliding[d] and st[T[d]] then
      st[B[d]], st[T[d]] = nil, nil
      st[Z[d]] = num(st, 'q')
      W.dirty = true
    end
  end
end

-- The latest of the last booked slot, the cooldowns' ends (ch: the latest ever set, kept when
-- an expired cooldown is pruned) and the last report.
local function horizon_of(st)
  return mmax(st.ls or 0, st.lm or 0, st.pr or 0, st.ra or 0, st.ch or 0, st.cu0 or 0, st.cu1 or 0,
    st.cu2 or 0, st.cu3 or 0)
end

-- A service quiet for its retention plus a second after its horizon is forgotten, as the memory
-- backend's ledger forgets it: every key is deleted and st emptied. With `read_only`, st is only
-- emptied. Returns true if it was stale.
local function forget_if_stale(st, now, retention, read_only)
  local horizon = horizon_of(st)
  if horizon > 0 and now >= horizon + retention + 1000000 then
    if not read_only then redis.call('DEL', K[1], K[2], K[3], K[4]) end
    for k in pairs(st) do st[k] = nil end
    return true
  end
  return false
end

-- TTLs are garbage collection: forgetting is explicit (forget_if_stale). Every key lives at least
-- until the service would be forgotten; TTLs are refreshed only when that time passes the one
-- last set (field ex), with a retention of slack, or when `force`d because the log was
-- (re)created. The state takes its TTL when written (write_state). Field rx says whether the
-- request-id hash has its TTL.
local function expire_all(st, now, retention, force)
  local need = horizon_of(st) + retention + 1000000
  if not force and need <= (st.ex or 0) then return end
  st.ex = need + mmax(retention, 1000000)
  W.dirty, W.ttl_moved = true, true
  local at_ms = math.ceil(st.ex / 1000)
  rcall('PEXPIREAT', K[2], at_ms)
  st.rx = rcall('PEXPIREAT', K[3], at_ms)
  rcall('PEXPIREAT', K[4], at_ms)
end

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
  local held = redis.call('ZCOUNT', K[4], '(' .. s(now), '+inf')
  if held < l.amount then return t0 end
  local e = redis.call('ZRANGEBYSCORE', K[4], '(' .. s(now), '+inf', 'WITHSCORES', 'LIMIT',
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
  if ls and ls > t then t, decider = ls, st.ld end
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

-- A list emptied by a rewrite is deleted, and with it its TTL: it is set again.
local function restore_log_ttl(st)
  if st.ex then redis.call('PEXPIREAT', K[2], s(math.ceil(st.ex / 1000))) end
end

-- Rewrites the log's entries from index i to its end as `entries` (unpacked).
local function rewrite_tail(st, i, entries)
  if i == 0 then redis.call('DEL', K[2]) else redis.call('LTRIM', K[2], 0, i - 1) end
  local out = {}
  for j, e in ipairs(entries) do
    out[#out + 1] = pack_entry(e)
    if #out == 4000 or j == #entries then
      redis.call('RPUSH', K[2], unpack(out))
      out = {}
    end
  end
  if i == 0 then restore_log_ttl(st) end
end

-- Rewrites the log's first #entries entries as `entries` (unpacked).
local function rewrite_head(st, entries)
  local whole = #entries == log_length(st)
  redis.call('LTRIM', K[2], #entries, -1)
  local out = {}
  for j = #entries, 1, -1 do
    out[#out + 1] = pack_entry(entries[j])
    if #out == 4000 or j == 1 then
      redis.call('LPUSH', K[2], unpack(out))
      out = {}
    end
  end
  if whole then restore_log_ttl(st) end
end

-- The log's entries from index i to j (inclusive), unpacked.
local function entries_between(i, j)
  local out = {}
  for _, raw in ipairs(redis.call('LRANGE', K[2], i, j)) do out[#out + 1] = unpack_entry(raw) end
  return out
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
  if orders ~= false and t >= ls then st.ls, st.ld, st.lr = t, decider, rank end
  if t > latest then st.lm = t end
  if not limits.windows_only then
    for _, l in ipairs(limits) do
      if l.conc and holds then
        rcall('ZADD', K[4], t + l.window, seq)
        -- The hold set may have just been (re)created after emptying: give it the other keys'
        -- TTL.
        if st.ex then rcall('PEXPIREAT', K[4], math.ceil(st.ex / 1000)) end
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
  if seq == (st.h0 or 0) then st.hr = reach end
  st.q, st.hw = seq + 1, now
  W.dirty = true
  up = up or ''
  local raw = spack(ENTRY, seq, t, reach, rank, #rid, rid, c0, c1, c2, c3, m0, m1, m2, m3, left or 0,
    c0, c1, c2, c3, #decider, decider, #up, up)
  local log = W.log
  log[#log + 1] = raw
  W.entry_of[seq] = raw
  if rid ~= '' then
    local rids = W.rids
    rids[#rids + 1] = rid; rids[#rids + 1] = seq
    W.rid_of[rid] = seq
    if st.rx ~= 1 and st.ex then W.rid_ttl = true end
  end
  return seq
end

-- Replaces the tail of the log, `k` entries, by tombstones (they are booked again elsewhere): no
-- cost, the running totals and reach of the entry before them, so the log stays in order.
local function bury_tail(st, k)
  local n = log_length(st)
  local before = n > k and entry_index(n - k - 1) or nil
  local graves = entries_between(n - k, n - 1)
  for _, g in ipairs(graves) do
    g[E_SLOT] = before and before[E_REACH] or 0
    g[E_REACH] = g[E_SLOT]
    for d = 0, 3 do
      g[E_COST + d] = 0
      g[E_CUM + d] = before and before[E_CUM + d] or num(st, B[d])
    end
    g[E_DECIDER] = before and before[E_DECIDER] or 'n'
    g[E_RID], g[E_UP], g[E_RANK], g[E_LEFT] = '', '', DEAD, 0
    for d = 0, 3 do g[E_REQ + d] = 0 end
  end
  rewrite_tail(st, n - k, graves)
  st.dd = num(st, 'dd') + k
  if n == k then st.hr = graves[1][E_REACH] end
end

-- Cost booked in limit l as of now, and the time until it is wholly free (no writes).
local function limit_usage(st, l, now)
  local used, reset = 0, 0
  if l.conc then
    used = redis.call('ZCOUNT', K[4], '(' .. s(now), '+inf')
    local last = redis.call('ZRANGE', K[4], -1, -1, 'WITHSCORES')
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
  if first and (lowered or delta > 0) and n - first_i <= MAX_DEFERRED then
    local queued = entries_between(first_i, n - 1)
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
            elseif l.conc and redis.call('ZSCORE', K[4], s(e[E_SEQ])) then
              redis.call('ZADD', K[4], s(t + l.window), s(e[E_SEQ]))
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
        local hold_end = e[E_RANK] ~= DEAD and redis.call('ZSCORE', K[4], s(e[E_SEQ]))
        if hold_end then redis.call('ZADD', K[4], s(tonumber(hold_end) + delta), s(e[E_SEQ])) end
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

-- First thing of every call of the function library (scripts.rs), whose locals outlive a call:
-- nothing a call left pending (an error ends a call anywhere) is seen by the next.
local function begin_call(keys, args)
  KEYS, ARGV, K, W = keys, args, keys, nil
  bind_libs()
end

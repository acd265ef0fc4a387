-- Shared by every Sluice script (concatenated in front of each of them). The whole data layout
-- and protocol (keys, state fields, lease records, decider codes, each script's ARGV and reply)
-- is LAYOUT.md, beside this file; what follows is the summary the code is read with.
-- Semantics are those of the memory backend's Ledger (server/src/core/ledger/); all numbers
-- are integers below 2^53, kept exact in Lua's doubles, and written with string.format('%d').
--
-- KEYS (one hash tag, so one cluster slot; a family's acquire passes 9 keys per member and works
-- on one member's at a time through K):
--   1 state     hash: n nonce, q next seq, hw high-water time, ls/ld/lr the frontier of
--               arrival order (the last slot booked in order, see book), its decider and its
--               priority rank, lm the latest slot ever booked when above ls,
--               cu<d>/cs<d>/cc<d> cooldown of dimension d (0: the whole service)
--               until/status/source, ch the latest cooldown end ever set, ov
--               overloads in a row, b<d>/t<d> base and running total of dimension d,
--               k<id>/f<id> a bucket's TAT (µs and fraction), am<d>_<window> provider budget
--               adopted for the sliding limit of dimension d and that window, rs/ra/rh last
--               report, ex the time every key's TTL runs to, rx '1' when the request-id hash has
--               that TTL. A bucket's id is <d>_<window>_<amount>_<burst>: per-limit state is
--               named by what the limit is, not by its position, so replicas whose configs
--               differ (during a reload) never read each other's buckets as their own.
--   2 log       zset: lease member -> reach, the latest slot booked up to it (its slot, but in
--               a family's ancestor, where a member's call may be booked behind a sibling's
--               queued one: core/lease.rs), so the log's order is the booking order
--   3 leases    hash: lease member -> "slot c0 c1 c2 c3 r0 r1 r2 r3 decider|request_id"
--   4 requests  hash: request_id -> lease member
--   5..8 cum    zsets, one per dimension with a sliding limit: lease member -> running total
--   9 holds     zset: lease member -> end of the in-flight slot it holds (a concurrent limit)
-- ARGV (common): 1 manual time ('' reads TIME), 2 limits (7 numbers each: dim kind amount
--   window burst A Wg; kind 0 sliding, 1 bucket, 2 sliding adopting provider budgets,
--   3 calls in flight, whose window is the lease timeout),
--   3 retention µs, 4 nonce for a new state. A last entry of kind 5 is no limit: the service's
--   budgets adapt to its 429s (core/adaptive.rs), over the quiet period in its window field.

-- The keys of the service being worked on: KEYS, or one family member's share of them (see
-- family.lua).
local K = KEYS

-- State field names by dimension d (0..3): cooldown until/status/source, base and running total.
local CU, CS, CC, B, T = {}, {}, {}, {}, {}
for d = 0, 3 do
  CU[d], CS[d], CC[d], B[d], T[d] = 'cu' .. d, 'cs' .. d, 'cc' .. d, 'b' .. d, 't' .. d
end

local PRUNE_BATCH = 128
local SHIFT_BOUND = 1024
local MAX_DEFERRED = 1024

-- An integer as text (zero, the most common value by far, without formatting).
local function s(x)
  if x == 0 then return '0' end
  return string.format('%d', x)
end
local function member(seq) return string.format('%016d', seq) end

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
-- MAX_SHAPES texts are kept). Each entry is {templates, sliding, period}; parse_limits hands out
-- fresh copies of the templates, since a service's limits are adjusted in place (adopted and
-- adaptive amounts); the table of sliding dimensions is shared (never changed).
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
      l.span = l.window
      sliding[l.dim] = true
    end
    if l then templates[#templates + 1] = l end
  end
  -- Amounts change in place only where budgets are adopted or adaptive (apply_adopted,
  -- apply_adaptive, report.lua); other shapes are read as they are, never copied.
  local fixed = period == nil
  for _, l in ipairs(templates) do fixed = fixed and not l.adopt and not l.abf end
  return { templates, sliding, period, fixed }
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
  -- changes (only the list's own fields, scale and period, are per call).
  local limits = { period = entry[3] }
  if entry[4] then
    for i, template in ipairs(entry[1]) do limits[i] = template end
    limits.shared = true
    return limits, entry[2]
  end
  for i, template in ipairs(entry[1]) do
    local t = template
    limits[i] = { dim = t.dim, bucket = t.bucket, adopt = t.adopt, conc = t.conc, amount = t.amount,
      window = t.window, burst = t.burst, a = t.a, wg = t.wg, span = t.span, kf = t.kf, ff = t.ff,
      abf = t.abf, af = t.af }
  end
  return limits, entry[2]
end

-- The adaptive fields before they had a prefix of their own (a* also named adopted budgets).
local OLD_ADAPTIVE = {as = 'ps', at = 'pt', ae = 'pe', ap = 'pp', ar = 'pr'}

local function read_state()
  local flat = redis.call('HGETALL', K[1])
  local st = {}
  for i = 1, #flat, 2 do st[flat[i]] = flat[i + 1] end
  -- A state an older release wrote: its adaptive budget is read under the new names (and
  -- written under them by the next throttle, which drops the old fields).
  if st.as ~= nil and st.ps == nil then
    for old, new in pairs(OLD_ADAPTIVE) do st[new], st.old_adaptive = st[old], true end
  end
  return st
end

local function num(st, field)
  local v = st[field]
  if v == nil then return 0 end
  return tonumber(v)
end

-- Adaptive budgets (core/adaptive.rs): the scale in permille, from the last throttle's scale (ps),
-- the scale it came at (pp) and its time (pt): each quiet period halves the gap up to ap, then
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
  local sc = adaptive_scale(st, limits, now)
  limits.scale = sc
  -- Shared limits (no adaptive or adopted budget) keep the configured amounts.
  if limits.shared then return end
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
-- a bucket's whole shape ("amount burst A Wg").
local function apply_adopted(st, limits)
  for _, l in ipairs(limits) do
    local am = l.adopt and st[l.af]
    if am then l.amount = tonumber(am) end
    local ab = l.abf and st[l.abf]
    if ab then
      local amount, burst, a, wg = string.match(ab, '^(%d+) (%d+) (%d+) (%d+)$')
      set_shape(l, tonumber(amount), tonumber(burst), tonumber(a), tonumber(wg))
    end
  end
end

-- "slot c0 c1 c2 c3 r0 r1 r2 r3 decider[ uplinks][ o<rank>.<left>]|request_id" -> table; uplinks
-- (a family member's leases in its ancestors, parent first) are "nonce:seq,nonce:seq" (LAYOUT.md).
local function parse_lease(rec)
  local bar = string.find(rec, '|', 1, true)
  local head, rid = rec, ''
  if bar then head, rid = string.sub(rec, 1, bar - 1), string.sub(rec, bar + 1) end
  local f = {}
  for v in string.gmatch(head, '%S+') do f[#f + 1] = v end
  local lease = { slot = tonumber(f[1]), cost = { tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), tonumber(f[5]) },
    requested = { tonumber(f[6]), tonumber(f[7]), tonumber(f[8]), tonumber(f[9]) }, decider = f[10],
    up = '', rank = 0, left = 0, rid = rid }
  -- Optional fields: uplinks, and the priority class "o<rank>.<overtakes left>" (written "k…"
  -- before 2026-12: read both, so leases booked by an older replica keep their class).
  for i = 11, #f do
    local rank, left = string.match(f[i], '^[ok](%d+)%.(%d+)$')
    if rank then lease.rank, lease.left = tonumber(rank), tonumber(left) else lease.up = f[i] end
  end
  return lease
end

local function format_lease(l)
  return s(l.slot) .. ' ' .. s(l.cost[1]) .. ' ' .. s(l.cost[2]) .. ' ' .. s(l.cost[3]) .. ' ' .. s(l.cost[4])
    .. ' ' .. s(l.requested[1]) .. ' ' .. s(l.requested[2]) .. ' ' .. s(l.requested[3]) .. ' '
    .. s(l.requested[4]) .. ' ' .. l.decider .. ((l.up or '') ~= '' and (' ' .. l.up) or '')
    .. (((l.rank or 0) > 0) and (' o' .. s(l.rank) .. '.' .. s(l.left)) or '') .. '|' .. l.rid
end

-- Drops leases whose longest span has passed and expired cooldowns. Leases go in batches of
-- at most PRUNE_BATCH, and only once the oldest has been past its span for `slack` µs, so one
-- call prunes many leases with a few commands instead of every call pruning one: expired leases
-- change no decision (window sums are taken over slots, not over what is stored). Updates st in
-- place and writes the changed fields. Returns whether the log is empty after it.
local function prune(st, now, retention, sliding, slack)
  local oldest = redis.call('ZRANGE', K[2], 0, 0, 'WITHSCORES')
  local empty = #oldest == 0
  if #oldest > 0 and tonumber(oldest[2]) + retention + slack <= now then
    local old = redis.call('ZRANGEBYSCORE', K[2], '-inf', s(now - retention), 'LIMIT', 0, PRUNE_BATCH)
    local records = redis.call('HMGET', K[3], unpack(old))
    local rids, owners = {}, {}
    for i, rec in ipairs(records) do
      if rec then
        local bar = string.find(rec, '|', 1, true)
        if bar and bar < #rec then
          rids[#rids + 1] = string.sub(rec, bar + 1)
          owners[#owners + 1] = old[i]
        end
      end
    end
    if #rids > 0 then
      local current = redis.call('HMGET', K[4], unpack(rids))
      local gone = {}
      for i, m in ipairs(current) do
        if m == owners[i] then gone[#gone + 1] = rids[i] end
      end
      if #gone > 0 then redis.call('HDEL', K[4], unpack(gone)) end
      if st.rx == '1' and redis.call('EXISTS', K[4]) == 0 then
        st.rx = '0'
        redis.call('HSET', K[1], 'rx', '0')
      end
    end
    local last = old[#old]
    -- Every dimension, not only those with a sliding limit now: a reload may have dropped a
    -- dimension's limit, and its running totals must not keep members of pruned leases.
    for d = 0, 3 do
      if sliding[d] or st[T[d]] then
        local score = redis.call('ZSCORE', K[5 + d], last)
        if score then st[B[d]] = score end
        redis.call('ZREM', K[5 + d], unpack(old))
      end
    end
    redis.call('HDEL', K[3], unpack(old))
    redis.call('ZREM', K[2], unpack(old))
    empty = redis.call('ZCARD', K[2]) == 0
    if empty then
      -- An empty log restarts the running totals at zero, so they never grow without bound.
      for d = 0, 3 do
        if st[T[d]] then st[B[d]] = '0'; st[T[d]] = '0' end
      end
    end
    for d = 0, 3 do
      if sliding[d] or st[T[d]] then
        redis.call('HSET', K[1], B[d], st[B[d]] or '0', T[d], st[T[d]] or '0')
      end
    end
  end
  if sliding.holds then redis.call('ZREMRANGEBYSCORE', K[9], '-inf', s(now)) end
  for d = 0, 3 do
    local cu = st[CU[d]]
    if cu and tonumber(cu) <= now then
      redis.call('HDEL', K[1], CU[d], CS[d], CC[d])
      st[CU[d]], st[CS[d]], st[CC[d]] = nil, nil, nil
    end
  end
  return empty
end

-- Running totals of a dimension without a sliding limit (a reload took it away) are dropped: they
-- stopped following the leases, so a sliding limit added back later starts from empty totals
-- instead of from stale ones.
local function drop_unused_totals(st, sliding)
  for d = 0, 3 do
    if not sliding[d] and st[T[d]] then
      redis.call('DEL', K[5 + d])
      redis.call('HDEL', K[1], B[d], T[d])
      st[B[d]], st[T[d]] = nil, nil
    end
  end
end

-- The latest of the last booked slot, the cooldowns' ends (ch: the latest ever set, kept when
-- an expired cooldown is pruned) and the last report.
local function horizon_of(st)
  return math.max(num(st, 'ls'), num(st, 'lm'), num(st, 'pr'), num(st, 'ra'), num(st, 'ch'), num(st, 'cu0'), num(st, 'cu1'),
    num(st, 'cu2'), num(st, 'cu3'))
end

-- A service quiet for its retention plus a second after its horizon is forgotten, as the memory
-- backend's ledger forgets it: every key is deleted and st emptied. With `read_only`, st is only
-- emptied. Returns true if it was stale.
local function forget_if_stale(st, now, retention, read_only)
  local horizon = horizon_of(st)
  if horizon > 0 and now >= horizon + retention + 1000000 then
    if not read_only then redis.call('DEL', unpack(K)) end
    for k in pairs(st) do st[k] = nil end
    return true
  end
  return false
end

-- TTLs are garbage collection: forgetting is explicit (forget_if_stale). Every key lives at least
-- until the service would be forgotten; TTLs are refreshed only when that time passes the one
-- last set (field ex), with a retention of slack, or when `force`d because a key was (re)created.
-- Field rx says whether the request-id hash has its TTL.
local function expire_all(st, now, retention, force)
  local need = horizon_of(st) + retention + 1000000
  if not force and need <= num(st, 'ex') then return end
  local at = need + math.max(retention, 1000000)
  st.ex = s(at)
  redis.call('HSET', K[1], 'ex', st.ex)
  local at_ms = s(math.ceil(at / 1000))
  for i = 1, #K do
    local set = redis.call('PEXPIREAT', K[i], at_ms)
    if i == 4 then st.rx = (set == 1) and '1' or '0' end
  end
  redis.call('HSET', K[1], 'rx', st.rx)
end

-- Writes of a batch of acquires, held back and sent as one command per key (see defer_writes);
-- nil when writes go out at once.
local pending = nil

-- From now on, book() collects its writes; flush_writes() sends them. Reads of the log, the
-- running totals, the leases and the request ids must flush first (or consult `pending`).
local function defer_writes()
  pending = { log = {}, cum = { {}, {}, {}, {} }, leases = {}, rids = {}, state = {},
    rid_of = {}, lease_of = {}, rid_ttl = false }
end

local function flush_writes(st)
  if not pending then return end
  if #pending.log > 0 then
    redis.call('ZADD', K[2], unpack(pending.log))
    for d = 0, 3 do
      if #pending.cum[d + 1] > 0 then redis.call('ZADD', K[5 + d], unpack(pending.cum[d + 1])) end
    end
    redis.call('HSET', K[3], unpack(pending.leases))
  end
  if #pending.rids > 0 then
    redis.call('HSET', K[4], unpack(pending.rids))
    if pending.rid_ttl then
      -- The request-id hash was (re)created since the TTLs were last set.
      redis.call('PEXPIREAT', K[4], s(math.ceil(tonumber(st.ex) / 1000)))
      st.rx = '1'
      pending.state.rx = true
    end
  end
  local fields = {}
  for f in pairs(pending.state) do
    fields[#fields + 1] = f; fields[#fields + 1] = st[f] or '0'
  end
  if #fields > 0 then redis.call('HSET', K[1], unpack(fields)) end
  defer_writes()
end

-- Earliest slot of bucket limit l at or after t0 for cost c.
local function bucket_earliest(st, l, c, t0)
  local k, f = num(st, l.kf), num(st, l.ff)
  if k == 0 and f == 0 then return t0 end
  local t = k - fdiv((l.burst - c) * l.wg - f, l.a)
  return math.max(t0, t)
end

-- Whether lease member m, booked at slot, is still in the log at now: past its retention after
-- its reach (its log score, which in a family's ancestor may be later than its slot), as the
-- memory backend prunes.
local function retained(slot, m, now, retention)
  if slot + retention > now then return true end
  local reach = redis.call('ZSCORE', K[2], m)
  return reach ~= false and reach ~= nil and tonumber(reach) + retention > now
end

-- Whether lease member m still holds its in-flight slot at now (services with an in-flight
-- limit): a retried acquire gets a lease back only then; otherwise the retry is a new call.
local function replayable(sliding, m, now)
  if not sliding.holds then return true end
  local e = redis.call('ZSCORE', K[9], m)
  return e ~= false and e ~= nil and tonumber(e) > now
end

-- Earliest slot at or after t0 at which fewer than l.amount in-flight slots are held (no
-- writes). Every held slot began at or before t0, so a slot at t overlaps those ending after t.
local function hold_earliest(l, now, t0)
  local held = redis.call('ZCOUNT', K[9], '(' .. s(now), '+inf')
  if held < l.amount then return t0 end
  local e = redis.call('ZRANGEBYSCORE', K[9], '(' .. s(now), '+inf', 'WITHSCORES', 'LIMIT',
    held - l.amount, 1)
  return math.max(t0, tonumber(e[2]))
end

-- Earliest slot of sliding limit l at or after t0 for cost c (no writes).
local function window_earliest(st, l, c, t0)
  local d = l.dim
  local base, total = num(st, B[d]), num(st, T[d])
  -- An adopted budget below this call's cost lets the call go alone.
  local amount = math.max(l.amount, c)
  local fill = total - base + c
  if fill <= amount then return t0 end
  local target = base + fill - amount
  flush_writes(st)
  local first = redis.call('ZRANGEBYSCORE', K[5 + d], s(target), '+inf', 'LIMIT', 0, 1)
  if #first == 0 then return nil end
  local slot = tonumber(redis.call('ZSCORE', K[2], first[1]))
  return math.max(t0, slot + l.window)
end

-- Earliest slot at or after t0 at which cost fits every one of `limits` on state st, after its
-- cooldowns and its last booked slot (core Ledger::earliest); what decided it; and whether the
-- in-flight limit held it back. nil when the window state is inconsistent. A `moved` lease holds
-- its in-flight slot already: the in-flight limit does not bind it (core Ledger::earliest_booked).
local function earliest_on(st, limits, cost, t0, now, moved)
  local t, decider, held_back = t0, 'n', false
  for d = 0, 3 do
    local cu = num(st, CU[d])
    if cu > t and cost[d + 1] > 0 then t, decider = cu, 'c' end
  end
  if num(st, 'ls') > t then t, decider = num(st, 'ls'), st.ld end
  for i, l in ipairs(limits) do
    local c = cost[l.dim + 1]
    local ti
    if l.bucket then
      ti = bucket_earliest(st, l, inflated(c, limits.scale or FULL), t)
    elseif l.conc then
      ti = moved and t or hold_earliest(l, now, t)
    else
      ti = window_earliest(st, l, c, t)
    end
    if ti == nil then return nil end
    if ti > t then t, decider, held_back = ti, s(i - 1), l.conc == true end
  end
  return t, decider, held_back
end

local MAX_EXACT = 9007199254740992

-- A time with a fraction: whole µs plus frac/A µs, 0 <= frac < A.
local function pair_add_units(k, f, units, a)
  local u = f + units
  local whole = fdiv(u, a)
  return k + whole, u - whole * a
end

local function pair_less(k1, f1, k2, f2)
  return k1 < k2 or (k1 == k2 and f1 < f2)
end

-- The running totals of dimension d restart at its base: every score and the total move down by
-- the base, so totals stay below 2^53 however long the log never empties (rare: once per ~2^52
-- booked). Work is one command per 3,500 leases held (Lua's unpack stops near 8,000 values).
local function rebase(st, d)
  local b = num(st, B[d])
  if b <= 0 then return end
  flush_writes(st)
  local flat = redis.call('ZRANGE', K[5 + d], 0, -1, 'WITHSCORES')
  local args = {}
  for i = 1, #flat, 2 do
    args[#args + 1] = s(tonumber(flat[i + 1]) - b); args[#args + 1] = flat[i]
  end
  for i = 1, #args, 7000 do
    redis.call('ZADD', K[5 + d], unpack(args, i, math.min(i + 6999, #args)))
  end
  st[T[d]], st[B[d]] = s(num(st, T[d]) - b), '0'
  redis.call('HSET', K[1], B[d], '0', T[d], st[T[d]])
end

-- Whether adding costs (a table of 4) keeps every running total below 2^53 (core
-- Ledger::totals_fit). When a total would pass it, expired leases are pruned to the memory
-- backend's exact retention and the totals rebased first: false only when the retained log itself
-- would hold 2^53, as the memory backend judges. May write (housekeeping); changes no decision.
local function totals_fit(st, sliding, costs, now, retention)
  local near = false
  for d = 0, 3 do
    if sliding[d] and num(st, T[d]) + costs[d + 1] >= MAX_EXACT then near = true end
  end
  if not near then return true end
  flush_writes(st)
  for _ = 1, 64 do
    local before = redis.call('ZCARD', K[2])
    prune(st, now, retention, sliding, 0)
    if redis.call('ZCARD', K[2]) == before then break end
  end
  for d = 0, 3 do
    if sliding[d] then
      if num(st, T[d]) + costs[d + 1] >= MAX_EXACT then rebase(st, d) end
      if num(st, T[d]) - num(st, B[d]) + costs[d + 1] >= MAX_EXACT then return false end
    end
  end
  return true
end

-- The latest slot ever booked.
-- Bucket limit l's TAT without the raw costs of `leases` ({rec = lease record} entries that step
-- out of the state, core Ledger::step_out): TAT − Wg × their cost, not below zero (above the true
-- TAT unless they were booked on a full bucket: the bucket then looks fuller, never emptier).
local function tat_without(st, l, leases)
  local sum = 0
  for _, q in ipairs(leases) do sum = sum + q.rec.cost[l.dim + 1] end
  local k, f = pair_add_units(num(st, l.kf), num(st, l.ff), -sum * l.wg, l.a)
  if k < 0 then k, f = 0, 0 end
  return k, f
end

local function latest_slot(st) return math.max(num(st, 'ls'), num(st, 'lm')) end

-- Takes `leases` (the last #leases of the log, as {rec = lease record} entries) out of the state
-- a decision reads (core Ledger::step_out): the last lease left ends the log (its slot and
-- decider are the frontier, its running totals the totals), and the buckets give back the
-- leases' raw costs. Writes nothing to Redis: every field goes through set(field, value).
local function step_out_of(st, limits, sliding, leases, set)
  local k = #leases
  set('lm', nil)
  local last = redis.call('ZREVRANGE', K[2], k, k, 'WITHSCORES')
  if #last > 0 then
    set('ls', last[2])
    set('ld', parse_lease(redis.call('HGET', K[3], last[1])).decider)
  else
    set('ls', '0')
  end
  for d = 0, 3 do
    if sliding[d] then
      local total = num(st, B[d])
      if #last > 0 then total = tonumber(redis.call('ZSCORE', K[5 + d], last[1])) end
      set(T[d], s(total))
    end
  end
  for _, l in ipairs(limits) do
    if l.bucket then
      local kk, ff = tat_without(st, l, leases)
      set(l.kf, s(kk)); set(l.ff, s(ff))
    end
  end
end

-- Books cost (a table of 4) at slot t with decider, as the next lease; writes every structure
-- (or collects the writes, see defer_writes) and updates st. A lease that `holds` a call takes an
-- in-flight slot (written at once, so the next acquire of a batch sees it). A lease that
-- `orders` (core NewLease::orders: a call of this service, or one this state's own limits or
-- cooldown queued) moves the frontier of arrival order; others (a sibling's call queued by its
-- own limit, usage from outside) only the latest slot. Returns the lease's sequence number.
local function book(st, limits, sliding, now, t, cost, decider, rid, holds, up, rank, left, orders)
  local seq = num(st, 'q')
  local m = member(seq)
  local latest = latest_slot(st)
  local reach = math.max(t, latest)
  -- Each number is formatted once: the slot is the frontier, the latest slot and the record's.
  local ts = s(t)
  local changed = { 'q', 'hw' }
  if orders ~= false and t >= num(st, 'ls') then
    st.ls, st.ld, st.lr = ts, decider, s(rank or 0)
    changed[#changed + 1] = 'ls'; changed[#changed + 1] = 'ld'; changed[#changed + 1] = 'lr'
  end
  if t > latest then
    st.lm = ts
    changed[#changed + 1] = 'lm'
  end
  for _, l in ipairs(limits) do
    if l.conc and holds then
      redis.call('ZADD', K[9], s(t + l.window), m)
      -- The hold set may have just been (re)created after emptying: give it the other keys' TTL.
      if st.ex then redis.call('PEXPIREAT', K[9], s(math.ceil(tonumber(st.ex) / 1000))) end
    elseif l.bucket then
      local k, f = num(st, l.kf), num(st, l.ff)
      if k < t then k, f = t, 0 end
      k, f = pair_add_units(k, f, inflated(cost[l.dim + 1], limits.scale or FULL) * l.wg, l.a)
      st[l.kf], st[l.ff] = s(k), s(f)
      changed[#changed + 1] = l.kf; changed[#changed + 1] = l.ff
    end
  end
  for d = 0, 3 do
    if sliding[d] then
      local total = num(st, T[d]) + cost[d + 1]
      if total >= MAX_EXACT then return redis.error_reply('sluice: running total beyond 2^53') end
      local total_s = s(total)
      if pending then
        local cum = pending.cum[d + 1]
        cum[#cum + 1] = total_s; cum[#cum + 1] = m
      else
        redis.call('ZADD', K[5 + d], total_s, m)
      end
      st[T[d]] = total_s
      changed[#changed + 1] = T[d]
    end
  end
  st.q, st.hw = s(seq + 1), s(now)
  -- format_lease's record of a new lease (requested = cost), each cost formatted once.
  local c1, c2, c3, c4 = s(cost[1]), s(cost[2]), s(cost[3]), s(cost[4])
  local record = ts .. ' ' .. c1 .. ' ' .. c2 .. ' ' .. c3 .. ' ' .. c4 .. ' ' .. c1 .. ' ' .. c2 .. ' '
    .. c3 .. ' ' .. c4 .. ' ' .. decider .. (((up or '') ~= '') and (' ' .. up) or '')
    .. (((rank or 0) > 0) and (' o' .. s(rank) .. '.' .. s(left or 0)) or '') .. '|' .. rid
  local reach_s = reach == t and ts or s(reach)
  if pending then
    for _, f in ipairs(changed) do pending.state[f] = true end
    local log, leases = pending.log, pending.leases
    log[#log + 1] = reach_s; log[#log + 1] = m
    leases[#leases + 1] = m; leases[#leases + 1] = record
    pending.lease_of[m] = record
    if rid ~= '' then
      local rids = pending.rids
      rids[#rids + 1] = rid; rids[#rids + 1] = m
      pending.rid_of[rid] = m
      if st.rx ~= '1' and st.ex then pending.rid_ttl = true end
    end
    return seq
  end
  local fields = {}
  for _, f in ipairs(changed) do fields[#fields + 1] = f; fields[#fields + 1] = st[f] end
  redis.call('HSET', K[1], unpack(fields))
  redis.call('ZADD', K[2], reach_s, m)
  redis.call('HSET', K[3], m, record)
  if rid ~= '' then
    redis.call('HSET', K[4], rid, m)
    if st.rx ~= '1' and st.ex then
      -- The request-id hash was (re)created since the TTLs were last set.
      redis.call('PEXPIREAT', K[4], s(math.ceil(tonumber(st.ex) / 1000)))
      st.rx = '1'
      redis.call('HSET', K[1], 'rx', '1')
    end
  end
  return seq
end

-- Cost booked in limit l as of now, and the time until it is wholly free (no writes).
local function limit_usage(st, l, now)
  local used, reset = 0, 0
  if l.conc then
    used = redis.call('ZCOUNT', K[9], '(' .. s(now), '+inf')
    local last = redis.call('ZRANGE', K[9], -1, -1, 'WITHSCORES')
    if #last > 0 then reset = math.max(0, tonumber(last[2]) - now) end
  elseif l.bucket then
    local k, f = num(st, l.kf), num(st, l.ff)
    if k >= now and (k > now or f > 0) then
      local ahead = (k - now) * l.a + f
      used = -fdiv(-ahead, l.wg)
      reset = -fdiv(-ahead, l.a)
    end
  else
    local d = l.dim
    local total = num(st, T[d])
    local gone = redis.call('ZREVRANGEBYSCORE', K[2], s(now - l.window), '-inf', 'LIMIT', 0, 1)
    local before = num(st, B[d])
    if #gone > 0 then
      local score = redis.call('ZSCORE', K[5 + d], gone[1])
      if score then before = tonumber(score) end
    end
    used = total - before
    if total > num(st, B[d]) then
      local last = redis.call('ZRANGEBYSCORE', K[5 + d], s(total), s(total), 'LIMIT', 0, 1)
      if #last > 0 then
        local slot = tonumber(redis.call('ZSCORE', K[2], last[1]))
        reset = math.max(0, slot + l.window - now)
      end
    end
  end
  return used, reset
end

-- The capacity of a limit: what one call may take at most.
local function capacity(l)
  if l.bucket then return l.burst end
  return l.amount
end

-- First thing of every call of the function library (scripts.rs), whose locals outlive a call:
-- nothing a call left pending (an error ends a call anywhere) is seen by the next.
local function begin_call(keys, args)
  KEYS, ARGV, K, pending = keys, args, keys, nil
end

-- The prelude every Sluice script shares (scripts.rs puts it, in order, common.lua, log.lua,
-- decide.lua, reconcile.lua and upgrade.lua, in front of each script or once into the function
-- library). This file: the keys, the packed formats, the limits, the state and the adaptive
-- arithmetic. The whole data layout and protocol (keys, state fields, log entries, decider codes,
-- each script's ARGV and reply) is LAYOUT.md, beside this file; what follows is the summary the
-- code is read with. Semantics are those of the memory backend's Ledger
-- (server/src/core/ledger/); all numbers are integers below 2^53, exact in Lua's doubles.
--
-- KEYS (one hash tag, so one cluster slot; a family's acquire passes 3 keys per member and works
-- on one member's at a time through K):
--   1 ledger  hash: field '' the service's state, a MessagePack map (fields in LAYOUT.md),
--             numbers kept as numbers; every other field a request id -> seq of its lease, while
--             the lease is retained. A call reads the state and its request ids in one HMGET and
--             writes them in one HSET
--   2 log     list: one packed entry per lease in booking order (see ENTRY below); the lease
--             with sequence number seq is at index seq - h0 (h0: the head's seq, in the state)
--   3 held    zset: seq -> end of the in-flight slot the lease holds (a concurrent limit)
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
-- Most leases are packed COMPACT instead: the head, the cost and running totals of dimensions 0
-- and 1, the overtakes left and the decider code; it stands for an ENTRY whose dimensions 2 and 3
-- are 0, whose requested cost is the booked one (not reconciled) and which has no uplinks. The
-- two are told apart by what follows the head: at least COMPACT_MIN bytes in an ENTRY, fewer in a
-- COMPACT one (a decider code is shorter than MAX_DECIDER bytes).
local COMPACT = '<ddddHc0dddddHc0'
local COMPACT_MIN, MAX_DECIDER = 108, 64
-- Acquires as acquire.lua and family.lua take them (protocol::PackedRequests writes them): first
-- NUMBERS for each (cost in dimensions 0..3, max_wait µs, priority rank and max overtakes,
-- deadline in Redis µs, -1 for none: 64 bytes), then each one's request id (u16 length, bytes;
-- read all at once, with the format ids_format(n)).
local NUMBERS, NUMBERS_SIZE = '<dddddddd', 64
local ID_FORMATS = {}
local function ids_format(n)
  local f = ID_FORMATS[n]
  if not f then
    f = '<' .. string.rep('Hc0', n)
    ID_FORMATS[n] = f
  end
  return f
end

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
  if up == '' and e[8] == 0 and e[9] == 0 and e[12] == 0 and e[13] == 0 and e[15] == e[6]
    and e[16] == e[7] and e[17] == 0 and e[18] == 0 and #dec < MAX_DECIDER then
    return spack(COMPACT, e[1], e[2], e[3], e[4], #rid, rid, e[6], e[7], e[10], e[11], e[14],
      #dec, dec)
  end
  return spack(ENTRY, e[1], e[2], e[3], e[4], #rid, rid, e[6], e[7], e[8], e[9], e[10], e[11],
    e[12], e[13], e[14], e[15], e[16], e[17], e[18], #dec, dec, #up, up)
end

local function unpack_entry(raw)
  -- The request id's length is the u16 after the head's four doubles.
  local lo, hi = string.byte(raw, 33, 34)
  if #raw - 34 - lo - 256 * hi < COMPACT_MIN then
    local seq, slot, reach, rank, rid, c0, c1, t0, t1, left, dec = sunpack(COMPACT, raw)
    return { seq, slot, reach, rank, rid, c0, c1, 0, 0, t0, t1, 0, 0, left, c0, c1, 0, 0, dec, '' }
  end
  return { sunpack(ENTRY, raw) }
end

-- The request ids of the n acquires packed in `packed`: a table (1..n), or the id itself when n is
-- 1 (what read_state takes).
local function request_ids(packed, n)
  if n == 1 then return (sunpack('<Hc0', packed, NUMBERS_SIZE + 1)) end
  return { sunpack(ids_format(n), packed, NUMBERS_SIZE * n + 1) }
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

local function begin_writes(st, known)
  W = { log = {}, rids = {}, entry_of = {}, rid_of = {}, known = known or false,
    dirty = st ~= nil and st.migrated == true }
  return W
end

-- Converts a state an earlier release wrote (upgrade.lua).
local migrate_old

-- The hash tag (and family member) the service's keys share: K[1] less its ':ledger'. An earlier
-- release's keys are named from it.
local function key_tag()
  return string.sub(K[1], 1, -(#':ledger' + 1))
end

-- Reads the state: a table of numbers and texts, empty for a service Redis does not hold. One
-- an earlier release wrote is converted first, unless `read_only` (then it reads as empty); the
-- caller must then write it (field `migrated`). With `ids` (the request ids of a call's n
-- acquires, '' for none: a table, or the id itself when n is 1), reads in the same command the
-- seq each names and returns them too, as a table id -> seq (begin_writes takes it:
-- lease_of_request reads it instead of the ledger). Returns the state and that table.
local function read_state(read_only, ids, n)
  local got = nil
  if n == 1 then
    if ids ~= '' then got = rcall('HMGET', K[1], '', ids) end
  elseif n then
    for i = 1, n do
      if ids[i] ~= '' then
        got = rcall('HMGET', K[1], '', unpack(ids, 1, n))
        break
      end
    end
  end
  local raw, known = nil, nil
  if got then
    raw, known = got[1], {}
    for i = 1, n do
      local v, id = got[i + 1], n == 1 and ids or ids[i]
      if v and id ~= '' then known[id] = tonum(v) end
    end
  else
    raw = rcall('HGET', K[1], '')
  end
  if raw then return unpack_state(raw), known end
  if read_only then return { new = true } end
  -- A service new to Redis, the usual case here, has none of its keys and no state an earlier
  -- release wrote (upgrade.lua reads those from ':state' and ':s'): one command says so.
  local tag = key_tag()
  if rcall('EXISTS', K[1], K[2], K[3], tag .. ':state', tag .. ':s') == 0 then
    return { new = true }
  end
  local st = migrate_old()
  if st then return st end
  -- No state: keys left without one (evicted alone, or a call that failed half-way) are not this
  -- service's any more; a new state starts clean.
  if rcall('EXISTS', K[1], K[2], K[3]) > 0 then rcall('DEL', K[1], K[2], K[3]) end
  -- Written for the first time: with its TTL (write_state).
  return { new = true }
end

local function num(st, field)
  return st[field] or 0
end

-- Writes the state, with the request ids the call booked and has not sent (flush_writes), in one
-- command; the ledger takes the TTL every key of the service runs to (field ex) when that moved
-- (expire_all) or the ledger is new, else keeps the TTL it has.
local function write_state(st)
  st.migrated = nil
  local new = st.new
  st.new = nil
  local packed = pack_state(st)
  local rids = W and W.rids
  if rids and #rids > 0 then
    rcall('HSET', K[1], '', packed, unpack(rids))
    W.rids = {}
  else
    rcall('HSET', K[1], '', packed)
  end
  if st.ex and (new or not W or W.ttl_moved) then
    rcall('PEXPIREAT', K[1], math.ceil(st.ex / 1000))
  end
end

-- Leases in the log (tombstones included) and leases held.
local function log_length(st) return (st.q or 0) - (st.h0 or 0) end
local function leases_held(st) return math.max(0, (st.q or 0) - (st.h0 or 0) - (st.dd or 0)) end

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

-- Appends an acquire's reply (a table of texts and numbers) to `out`, the one flat array
-- acquire.lua and family.lua return: its length, then its elements (Redis converts each table of
-- a reply at a cost of its own; protocol.rs AcquireReplies reads this).
local function emit(out, reply)
  local n = #out + 1
  out[n] = #reply
  for i = 1, #reply do out[n + i] = reply[i] end
end

-- emit of a grant, {'G', seq, slot, wait, decider, nonce}, without building the reply's table
-- (the reply of most acquires).
local function emit_grant(out, seq, slot, wait, decider, nonce)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 6, 'G', seq, slot
  out[n + 5], out[n + 6], out[n + 7] = wait, decider, nonce
end

-- First thing of every call of the function library (scripts.rs), whose locals outlive a call:
-- nothing a call left pending (an error ends a call anywhere) is seen by the next.
local function begin_call(keys, args)
  KEYS, ARGV, K, W = keys, args, keys, nil
  bind_libs()
end

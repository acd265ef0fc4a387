-- Acquire in a family (core/family.rs): a batch of n requests of one service, each decided on the
-- service's state and its ancestors' together. The slot is the earliest at which the cost fits
-- every member; it is booked in all of them or in none. The service's lease records the leases
-- booked in its ancestors (its uplinks), so a report reaches them.
-- KEYS: 3 per member, the service's first, then its parent's, … (one hash tag: the family's).
-- ARGV 5 most leases held, 6 n, 7 m members, then for member j = 2..m: its limits, retention and
-- nonce for a new state (8 + 3 (j − 2) …), then the n requests packed as acquire.lua takes them
-- (NUMBERS, then the ids; a family member's calls are not overtaken: rank and max overtakes are
-- not read).
-- Each member's state has a nonce of its own, so an uplink never names a lease of another member
-- (after a reload that changed the family).
-- Returns one reply per request, as acquire.lua does (flattened: emit).

local m = tonumber(ARGV[7])
local members = {}
for j = 1, m do
  local lt, rt, nonce = ARGV[2], ARGV[3], ARGV[4]
  if j > 1 then
    local a = 8 + 3 * (j - 2)
    lt, rt, nonce = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  end
  local limits, sliding = parse_limits(lt)
  local keys = { KEYS[3 * j - 2], KEYS[3 * j - 1], KEYS[3 * j] }
  members[j] = { limits = limits, sliding = sliding, retention = tonumber(rt), keys = keys,
    nonce = nonce }
end
-- Works on member j: its keys and its writes.
local function use(j)
  K = members[j].keys
  W = members[j].writes
end

local now = now_micros()
for j = 1, m do
  K = members[j].keys
  members[j].st = read_state()
  now = math.max(now, num(members[j].st, 'hw'))
end
for j = 1, m do
  K = members[j].keys
  local mb = members[j]
  mb.writes = begin_writes(mb.st)
  forget_if_stale(mb.st, now, mb.retention, false)
  drop_unused_totals(mb.st, mb.sliding)
  apply_adopted(mb.st, mb.limits)
  apply_adaptive(mb.st, mb.limits, now)
end
local max_leases = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local first_request = 8 + 3 * (m - 1)

-- A decider seen from `levels` below ('n', 'c', a limit index, or 'p<level>_<c|index>').
local function lift(d, levels)
  if levels == 0 or d == 'n' then return d end
  local a, x = string.match(d, '^p(%d+)_(.+)$')
  if a then return 'p' .. s(tonumber(a) + levels) .. '_' .. x end
  return 'p' .. s(levels) .. '_' .. d
end

-- A decider (seen from the service) as its ancestor `levels` up records it.
local function lower(d, levels)
  if levels == 0 then return d end
  local a, x = string.match(d, '^p(%d+)_(.+)$')
  if not a then return 'n' end
  a = tonumber(a)
  if a == levels then return x end
  if a > levels then return 'p' .. s(a - levels) .. '_' .. x end
  return 'n'
end

local function acquire_one(cost, max_wait, rid, deadline)
  if deadline >= 0 and now > deadline then return { 'E' } end
  local first = members[1]
  use(1)
  if rid ~= '' then
    local seq, e = lease_of_request(first.st, rid)
    if e then
      -- Replayed only while it holds every in-flight slot it took, its ancestors' too: a job
      -- retried after its report (or timeout) is a new call.
      local held = (W.entry_of[seq] ~= nil or retained(e, now, first.retention))
        and replayable(first.sliding, seq, now)
      local j = 1
      for up in string.gmatch(e[E_UP] or '', '[^,]+') do
        j = j + 1
        local mb = members[j]
        if not held or not mb then break end
        if mb.sliding.holds then
          local nonce, useq = string.match(up, '^(%x+):(%d+)$')
          local h = nonce == mb.st.n and redis.call('ZSCORE', mb.keys[3], useq)
          held = h ~= false and h ~= nil and tonumber(h) > now
        end
      end
      if held then
        if not asked_for(e, cost) then return { 'R' } end
        return { 'G', seq, e[E_SLOT], math.max(0, e[E_SLOT] - now), e[E_DECIDER], first.st.n }
      end
    end
  end

  -- held_back: an in-flight limit decided the slot (only a lease timeout would free one).
  local t, decider, held_back = now, 'n', false
  for j = 1, m do
    use(j)
    local mb = members[j]
    local tj, dj, hj = earliest_on(mb.st, mb.limits, cost, t, now)
    if tj == nil then return redis.error_reply('sluice: inconsistent window state') end
    if tj > t then t, decider, held_back = tj, lift(dj, j - 1), hj end
  end
  local wait = t - now
  if wait > max_wait or held_back then return { 'D', wait, decider } end

  for j = 1, m do
    use(j)
    local mb = members[j]
    if not totals_fit(mb.st, mb.sliding, cost, now, mb.retention) then return { 'O' } end
  end

  -- Book: housekeeping once per member and batch, then every member or none.
  for j = 1, m do
    use(j)
    local mb = members[j]
    if not mb.housekept then
      mb.housekept = true
      mb.created = prune(mb.st, now, mb.retention, mb.sliding, fdiv(mb.retention, 8))
    end
    if leases_held(mb.st) >= max_leases then return { 'F' } end
  end
  local ups = {}
  for j = m, 1, -1 do
    use(j)
    local mb = members[j]
    local st = mb.st
    if not st.n then st.n = mb.nonce end
    local up, r = nil, ''
    if j == 1 then
      up, r = table.concat(ups, ','), rid
      if up == '' then up = nil end
    end
    -- An ancestor's arrival order holds the calls its own limits or cooldown queued, not a
    -- member's call queued by the member's own (core/family.rs).
    local seen = lower(decider, j - 1)
    local orders = j == 1 or seen == 'c' or string.match(seen, '^%d+$') ~= nil
    local seq = book(st, mb.limits, mb.sliding, now, t, cost, seen, r, true, up, nil, nil, orders)
    if type(seq) == 'table' then return seq end
    if j > 1 then ups[j - 1] = st.n .. ':' .. s(seq) end
    if j == 1 then
      return { 'G', seq, t, wait, decider, st.n }
    end
  end
end

local replies = {}
local packed = ARGV[first_request]
local ids = request_ids(packed, n)
for r = 1, n do
  local c0, c1, c2, c3, max_wait, _, _, deadline =
    sunpack(NUMBERS, packed, NUMBERS_SIZE * (r - 1) + 1)
  local reply = acquire_one({ c0, c1, c2, c3 }, max_wait, n == 1 and ids or ids[r], deadline)
  if reply.err then return reply end
  emit(replies, reply)
end
for j = 1, m do
  local mb = members[j]
  use(j)
  if W.dirty then
    flush_writes(mb.st, true)
    expire_all(mb.st, now, mb.retention, mb.created)
    write_state(mb.st)
  end
end
return replies

-- Acquire in a family (core/family.rs): a batch of n requests of one service, each decided on the
-- service's state and its ancestors' together. The slot is the earliest at which the cost fits
-- every member; it is booked in all of them or in none. The service's lease records the leases
-- booked in its ancestors (its uplinks), so a report reaches them.
-- KEYS: 9 per member, the service's first, then its parent's, … (one hash tag: the family's).
-- ARGV 5 most leases held, 6 n, 7 m members, then for member j = 2..m: its limits, retention and
-- nonce for a new state (8 + 3 (j − 2) …), then for request r: cost "c0 c1 c2 c3", max_wait µs,
-- request_id, deadline (as in acquire.lua). Each member's state has a nonce of its own, so an uplink never names a lease of
-- another member (after a reload that changed the family).
-- Returns one reply per request, as acquire.lua does.

local m = tonumber(ARGV[7])
local members = {}
for j = 1, m do
  local lt, rt, nonce = ARGV[2], ARGV[3], ARGV[4]
  if j > 1 then
    local a = 8 + 3 * (j - 2)
    lt, rt, nonce = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  end
  local limits, sliding = parse_limits(lt)
  local keys = {}
  for i = 1, 9 do keys[i] = KEYS[9 * (j - 1) + i] end
  members[j] = { limits = limits, sliding = sliding, retention = tonumber(rt), keys = keys,
    nonce = nonce }
end
local function use(j) K = members[j].keys end

local now = now_micros()
for j = 1, m do
  use(j)
  members[j].st = read_state()
  now = math.max(now, num(members[j].st, 'hw'))
end
for j = 1, m do
  use(j)
  local mb = members[j]
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
  if deadline and now > deadline then return { 'E' } end
  local first = members[1]
  use(1)
  if rid ~= '' then
    local mm = redis.call('HGET', K[4], rid)
    local rec = mm and redis.call('HGET', K[3], mm)
    if rec then
      local lease = parse_lease(rec)
      -- Replayed only while it holds every in-flight slot it took, its ancestors' too: a job
      -- retried after its report (or timeout) is a new call.
      local held = retained(lease.slot, mm, now, first.retention) and replayable(first.sliding, mm, now)
      local j = 1
      for up in string.gmatch(lease.up, '[^,]+') do
        j = j + 1
        local mb = members[j]
        if not held or not mb then break end
        if mb.sliding.holds then
          local nonce, seq = string.match(up, '^(%x+):(%d+)$')
          local e = nonce == mb.st.n and redis.call('ZSCORE', mb.keys[9], member(tonumber(seq)))
          held = e ~= false and e ~= nil and tonumber(e) > now
        end
      end
      if held then
        for d = 1, 4 do
          if lease.requested[d] ~= cost[d] then return { 'R' } end
        end
        return { 'G', s(tonumber(mm)), s(lease.slot), s(math.max(0, lease.slot - now)), lease.decider, first.st.n }
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
  if wait > max_wait or held_back then return { 'D', s(wait), decider } end

  for j = 1, m do
    use(j)
    local mb = members[j]
    if not totals_fit(mb.st, mb.sliding, cost, now, mb.retention) then return { 'O' } end
  end

  -- Book: housekeeping once per member and batch, then every member or none.
  for j = 1, m do
    use(j)
    local mb = members[j]
    if mb.held == nil then
      prune(mb.st, now, mb.retention, mb.sliding, fdiv(mb.retention, 8))
      mb.held = redis.call('ZCARD', K[2])
      mb.created = mb.held == 0
    end
    if mb.held >= max_leases then return { 'F' } end
  end
  local ups = {}
  for j = m, 1, -1 do
    use(j)
    local mb = members[j]
    local st = mb.st
    if not st.n then
      st.n = mb.nonce
      redis.call('HSET', K[1], 'n', st.n)
    end
    local up, r = nil, ''
    if j == 1 then
      up, r = table.concat(ups, ','), rid
    end
    -- An ancestor's arrival order holds the calls its own limits or cooldown queued, not a
    -- member's call queued by the member's own (core/family.rs).
    local seen = lower(decider, j - 1)
    local orders = j == 1 or seen == 'c' or string.match(seen, '^%d+$') ~= nil
    local seq = book(st, mb.limits, mb.sliding, now, t, cost, seen, r, true, up, nil, nil, orders)
    if type(seq) == 'table' then return seq end
    mb.held = mb.held + 1
    mb.wrote = true
    if j > 1 then ups[j - 1] = st.n .. ':' .. s(seq) end
    if j == 1 then
      return { 'G', s(seq), s(t), s(wait), decider, st.n }
    end
  end
end

local replies = {}
for r = 1, n do
  local base = first_request + 4 * (r - 1)
  local cost = {}
  for v in string.gmatch(ARGV[base], '%S+') do cost[#cost + 1] = tonumber(v) end
  local reply = acquire_one(cost, tonumber(ARGV[base + 1]), ARGV[base + 2], tonumber(ARGV[base + 3]))
  if reply.err then return reply end
  replies[r] = reply
end
for j = 1, m do
  local mb = members[j]
  if mb.wrote then
    use(j)
    expire_all(mb.st, now, mb.retention, mb.created)
  end
end
return replies

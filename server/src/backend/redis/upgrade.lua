-- States written by an earlier release are converted the first time a call that may write finds
-- none of this layout. The release of 2026-12-06 kept the state in a string `{tag}:state` (the
-- MessagePack map the ledger's field '' holds now) and the request ids in a hash `{tag}:ids`; the
-- log and held slots had the keys they have now: the two move into the ledger (migrate_v2).
-- Releases before it kept a service in nine keys, a state hash
-- `{tag}:s`, the log as a sorted set `:log` of lease members ("%016d" of the seq) by reach, lease
-- records in a hash `:l` ("slot c0 c1 c2 c3 r0 r1 r2 r3 decider[ uplinks][ o<rank>.<left>]|rid"),
-- request ids in a hash `:r` (rid -> member), the running totals of each dimension in sorted sets
-- `:c0`..`:c3`, and held in-flight slots in a sorted set `:h`. Everything carries over: cooldowns,
-- adopted and adaptive budgets, buckets, the last report, and every retained lease with its id,
-- request id and in-flight slot, so reports and retries of calls made before the upgrade still
-- find their leases. A log longer than MIGRATE_MAX carries over as one lease holding all its usage
-- at its latest slot (never less than was booked; the old lease ids then name nothing). The old
-- keys are deleted. Replicas of the earlier release write only their own keys: run one release at
-- a time on one Redis (README, "Upgrading").

local MIGRATE_MAX = 20000
-- Fields of the old state that are texts; every other field is a number.
local OLD_TEXTS = { n = true, ld = true, cc0 = true, cc1 = true, cc2 = true, cc3 = true, rh = true }
-- The adaptive budget's fields before they had a prefix of their own.
local OLD_ADAPTIVE = { as = 'ps', at = 'pt', ae = 'pe', ap = 'pp', ar = 'pr' }

-- An old lease record, unpacked: slot, costs, requested costs, decider, uplinks, rank, overtakes
-- left, request id.
local function old_lease(rec)
  local bar = string.find(rec, '|', 1, true)
  local head, rid = rec, ''
  if bar then head, rid = string.sub(rec, 1, bar - 1), string.sub(rec, bar + 1) end
  local f = {}
  for v in string.gmatch(head, '%S+') do f[#f + 1] = v end
  local lease = { slot = tonumber(f[1]), cost = {}, req = {}, decider = f[10] or 'n', up = '', rank = 0,
    left = 0, rid = rid }
  for d = 1, 4 do
    lease.cost[d] = tonumber(f[1 + d]) or 0
    lease.req[d] = tonumber(f[5 + d]) or lease.cost[d]
  end
  for i = 11, #f do
    local rank, left = string.match(f[i], '^[ok](%d+)%.(%d+)$')
    if rank then lease.rank, lease.left = tonumber(rank), tonumber(left) else lease.up = f[i] end
  end
  return lease
end

-- Returns the nine-key layout's keys of the service whose new keys are K.
local function old_keys()
  local tag = key_tag()
  return { tag .. ':s', tag .. ':log', tag .. ':l', tag .. ':r', tag .. ':c0', tag .. ':c1',
    tag .. ':c2', tag .. ':c3', tag .. ':h' }
end

-- Writes `fields` (field, value, …) into the ledger, a few thousand at a time.
local function hset_all(fields)
  for i = 1, #fields, 4000 do
    rcall('HSET', K[1], unpack(fields, i, math.min(i + 3999, #fields)))
  end
end

-- Converts a state of the release of 2026-12-06: its state and request ids move into the ledger,
-- at once and with their TTL (the state's ex); the old keys are deleted. Returns the state, or nil
-- when there is none.
local function migrate_v2()
  local tag = key_tag()
  local raw = rcall('GET', tag .. ':state')
  if not raw then return nil end
  local st = unpack_state(raw)
  -- Whether the request-id hash has its TTL, how many fields it holds: the ledger's own now.
  st.rx, st.ri, st.migrated = nil, nil, true
  local fields = rcall('HGETALL', tag .. ':ids')
  rcall('DEL', K[1])
  hset_all(fields)
  rcall('HSET', K[1], '', pack_state(st))
  if st.ex then rcall('PEXPIREAT', K[1], math.ceil(st.ex / 1000)) end
  rcall('DEL', tag .. ':state', tag .. ':ids')
  return st
end

-- The old state's fields as this layout keeps them.
local function old_fields(flat)
  local st = {}
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    if OLD_TEXTS[f] then
      st[f] = v
    elseif string.sub(f, 1, 2) == 'ab' then
      local amount, burst, a, wg = string.match(v, '^(%d+) (%d+) (%d+) (%d+)$')
      if amount then st[f] = { tonumber(amount), tonumber(burst), tonumber(a), tonumber(wg) } end
    elseif f ~= 'rx' then
      st[f] = tonumber(v)
    end
  end
  for old, new in pairs(OLD_ADAPTIVE) do
    if st[old] and not st[new] then st[new] = st[old] end
    st[old] = nil
  end
  return st
end

-- Converts a state of the earlier layout (see the top of this file) into this one, writing the
-- log, request ids and held slots, and deleting the old keys. Returns the state (to be written by
-- the caller, which must: `migrated` is set), or nil when there is none.
migrate_old = function()
  local v2 = migrate_v2()
  if v2 then return v2 end
  local o = old_keys()
  local flat = rcall('HGETALL', o[1])
  if #flat == 0 then return nil end
  local st = old_fields(flat)
  st.new, st.migrated = true, true
  -- Anything a conversion that failed half-way left is written again.
  rcall('DEL', K[1], K[2], K[3])
  local q = st.q or 0
  local count = rcall('ZCARD', o[2])
  -- The conversion walks the seqs from the oldest retained lease's: at most MIGRATE_MAX.
  local head = count > 0 and rcall('ZRANGE', o[2], 0, 0) or {}
  local whole = count > 0 and count <= MIGRATE_MAX and q - tonumber(head[1]) <= MIGRATE_MAX
  local log = whole and rcall('ZRANGE', o[2], 0, -1, 'WITHSCORES') or {}
  -- Held in-flight slots keep their ends.
  local holds = rcall('ZRANGE', o[9], 0, -1, 'WITHSCORES')
  for i = 1, #holds, 2 do rcall('ZADD', K[3], holds[i + 1], tonumber(holds[i])) end
  if count > 0 and not whole then
    -- One lease holds the whole retained usage at the latest slot.
    local last = rcall('ZRANGE', o[2], -1, -1, 'WITHSCORES')
    local reach = tonumber(last[2])
    local e = { q, reach, reach, 0, '', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'n', '' }
    for d = 0, 3 do
      if st[T[d]] then
        e[E_COST + d] = st[T[d]] - (st[B[d]] or 0)
        e[E_REQ + d] = e[E_COST + d]
        e[E_CUM + d] = st[T[d]]
      end
    end
    rcall('RPUSH', K[2], pack_entry(e))
    st.h0, st.q, st.hr = q, q + 1, reach
  elseif #log > 0 then
    local members = {}
    for i = 1, #log, 2 do members[#members + 1] = log[i] end
    local records = {}
    for i = 1, #members, 1000 do
      for _, r in ipairs(rcall('HMGET', o[3], unpack(members, i, math.min(i + 999, #members)))) do
        records[#records + 1] = r
      end
    end
    local cums = {}
    for d = 0, 3 do
      if st[T[d]] then
        cums[d] = {}
        local c = rcall('ZRANGE', o[5 + d], 0, -1, 'WITHSCORES')
        for i = 1, #c, 2 do cums[d][c[i]] = tonumber(c[i + 1]) end
      end
    end
    -- By seq: the log's order. Seqs that no longer name a lease (taken out by an overtake) become
    -- tombstones, so indexes follow seqs.
    local by_seq, first = {}, nil
    for i, m in ipairs(members) do
      local seq = tonumber(m)
      if records[i] then
        by_seq[seq] = { m = m, reach = tonumber(log[2 * i]), lease = old_lease(records[i]) }
        if first == nil or seq < first then first = seq end
      end
    end
    first = first or q
    local out, prev, dead = {}, nil, 0
    local cum = { st.b0 or 0, st.b1 or 0, st.b2 or 0, st.b3 or 0 }
    for seq = first, q - 1 do
      local x = by_seq[seq]
      local e
      if x then
        local l = x.lease
        e = { seq, l.slot, x.reach, l.rank, l.rid, l.cost[1], l.cost[2], l.cost[3], l.cost[4], 0, 0, 0, 0,
          l.left, l.req[1], l.req[2], l.req[3], l.req[4], l.decider, l.up }
        for d = 0, 3 do
          local c = cums[d] and cums[d][x.m]
          if c then
            cum[d + 1] = c
          elseif cums[d] then
            -- Booked before its dimension's totals restarted: not counted there.
            st[Z[d]] = seq + 1
          end
          e[E_CUM + d] = cum[d + 1]
        end
      else
        local r = prev and prev[E_REACH] or 0
        e = { seq, r, r, DEAD, '', 0, 0, 0, 0, cum[1], cum[2], cum[3], cum[4], 0, 0, 0, 0, 0,
          prev and prev[E_DECIDER] or 'n', '' }
        dead = dead + 1
      end
      out[#out + 1] = pack_entry(e)
      prev = e
      if #out == 4000 then rcall('RPUSH', K[2], unpack(out)); out = {} end
    end
    if #out > 0 then rcall('RPUSH', K[2], unpack(out)) end
    st.h0, st.dd = first, dead > 0 and dead or nil
    st.hr = first < q and by_seq[first] and by_seq[first].reach or nil
    -- Request ids of the leases carried over.
    local ids = rcall('HGETALL', o[4])
    local pairs_out = {}
    for i = 1, #ids, 2 do
      local seq = tonumber(ids[i + 1])
      if seq and by_seq[seq] and ids[i] ~= '' then
        pairs_out[#pairs_out + 1] = ids[i]; pairs_out[#pairs_out + 1] = seq
      end
    end
    hset_all(pairs_out)
  else
    st.h0 = q
  end
  -- Written at once, with the TTL the old keys had (their state's ex): nothing later in this
  -- call can lose it. The old keys go last.
  if st.ex then
    local at_ms = math.ceil(st.ex / 1000)
    rcall('PEXPIREAT', K[2], at_ms)
    rcall('PEXPIREAT', K[3], at_ms)
    st.new, st.migrated = nil, nil
    rcall('HSET', K[1], '', pack_state(st))
    rcall('PEXPIREAT', K[1], at_ms)
    st.new, st.migrated = true, true
  end
  rcall('DEL', unpack(o))
  return st
end

-- The lease log (part of the prelude, after common.lua; LAYOUT.md, "Log entries"): reading
-- entries by seq and index, searching it, the writes a call collects, pruning, forgetting a quiet
-- service and the keys' TTLs, and rewriting parts of it.
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

-- The lease an earlier acquire with request id rid booked, while this state's log holds it: its
-- seq and entry; nil otherwise.
local function lease_of_request(st, rid)
  local seq = W.rid_of[rid]
  if not seq then
    local known = W.known
    if known then
      -- Read with the state (read_state): nil names none.
      seq = known[rid]
    else
      local v = rcall('HGET', K[1], rid)
      seq = v and tonum(v)
    end
  end
  local e = seq and entry_at(st, seq)
  if e and e[E_RID] == rid then return seq, e end
  return nil
end

-- Whether cost is what lease e was asked for (a retry with its request id must ask the same).
local function asked_for(e, cost)
  for d = 0, 3 do
    if e[E_REQ + d] ~= cost[d + 1] then return false end
  end
  return true
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
  local e = redis.call('ZSCORE', K[3], s(seq))
  return e ~= false and e ~= nil and tonumber(e) > now
end

-- Sends the writes collected so far (the state is written by write_state); with `log_only`, the
-- request ids stay collected: write_state sends them with the state, in one command.
local function flush_writes(st, log_only)
  if not W then return end
  if #W.log > 0 then
    rcall('RPUSH', K[2], unpack(W.log))
    W.log, W.entry_of = {}, {}
  end
  if #W.rids > 0 and not log_only then
    -- The ledger holds the state, so it exists (and has its TTL) unless the state is new.
    rcall('HSET', K[1], unpack(W.rids))
    W.rids = {}
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
      local current = rcall('HMGET', K[1], unpack(rids))
      local gone = {}
      for i, v in ipairs(current) do
        if v and tonumber(v) == seqs[i] then gone[#gone + 1] = rids[i] end
      end
      if #gone > 0 then rcall('HDEL', K[1], unpack(gone)) end
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
      -- An empty log restarts the running totals at zero, so they never grow without bound, and
      -- holds no tombstone.
      for d = 0, 3 do
        if st[T[d]] then st[B[d]], st[T[d]] = 0, 0 end
        st[Z[d]] = nil
      end
      st.dd = nil
    end
  end
  if sliding.holds then redis.call('ZREMRANGEBYSCORE', K[3], '-inf', s(now)) end
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
  local h, lm = st.ls or 0, st.lm
  if lm and lm > h then h = lm end
  -- Most states hold neither a report nor a cooldown.
  if st.pr or st.ra or st.ch or st.cu0 or st.cu1 or st.cu2 or st.cu3 then
    h = mmax(h, st.pr or 0, st.ra or 0, st.ch or 0, st.cu0 or 0, st.cu1 or 0, st.cu2 or 0,
      st.cu3 or 0)
  end
  return h
end

-- A service quiet for its retention plus a second after its horizon is forgotten, as the memory
-- backend's ledger forgets it: every key is deleted and st emptied. With `read_only`, st is only
-- emptied. Returns true if it was stale.
local function forget_if_stale(st, now, retention, read_only)
  local horizon = horizon_of(st)
  if horizon > 0 and now >= horizon + retention + 1000000 then
    if not read_only then redis.call('DEL', K[1], K[2], K[3]) end
    for k in pairs(st) do st[k] = nil end
    return true
  end
  return false
end

-- TTLs are garbage collection: forgetting is explicit (forget_if_stale). Every key lives at least
-- until the service would be forgotten; TTLs are refreshed only when that time passes the one
-- last set (field ex), with a retention of slack, or when `force`d because the log was
-- (re)created. The ledger (state and request ids) takes its TTL when the state is written
-- (write_state).
local function expire_all(st, now, retention, force)
  local need = horizon_of(st) + retention + 1000000
  if not force and not W.log_created and need <= (st.ex or 0) then return end
  st.ex = need + mmax(retention, 1000000)
  W.dirty, W.ttl_moved = true, true
  local at_ms = math.ceil(st.ex / 1000)
  rcall('PEXPIREAT', K[2], at_ms)
  rcall('PEXPIREAT', K[3], at_ms)
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

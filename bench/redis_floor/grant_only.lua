-- The floor of a grant in today's layout (BENCHMARKS.md, section 6.5): run by
-- `bench/redis_alone.py --acquire` in acquire.lua's place, with acquire.lua's keys and arguments.
-- For each service it does what a grant costs Redis and nothing a decision adds: reads the state
-- and the request ids in one HMGET, decodes and encodes the state, packs one log entry per
-- acquire, writes the state and request ids in one HSET, appends the entries, and replies to each
-- acquire as a grant does. No limit is checked, nothing is pruned, no TTL is set.

local clock = tonumber(ARGV[1])
local replies = {}
local at = 4
for j = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[at + 3])
  local packed = ARGV[at + 4]
  local k = 3 * j
  local ids = request_ids(packed, n)
  local got = rcall('HMGET', KEYS[k - 2], '', n == 1 and ids or unpack(ids))
  local st = got[1] and unpack_state(got[1]) or {}
  st.n = st.n or ARGV[at + 2]
  local log, writes = {}, { '', '' }
  for r = 1, n do
    local c0, c1 = sunpack('<dd', packed, NUMBERS_SIZE * (r - 1) + 1)
    local seq = st.q or 0
    local rid = n == 1 and ids or ids[r]
    local t0, t1 = (st.t0 or 0) + c0, (st.t1 or 0) + c1
    st.t0, st.t1, st.q, st.hw, st.ls = t0, t1, seq + 1, clock, clock
    st.hr, st.h0, st.b0, st.b1 = st.hr or clock, st.h0 or 0, st.b0 or 0, st.b1 or 0
    st.ex = clock + 3000000
    log[#log + 1] = spack(COMPACT, seq, clock, clock, 0, #rid, rid, c0, c1, t0, t1, 0, 1, 'n')
    writes[#writes + 1] = rid
    writes[#writes + 1] = seq
    emit_grant(replies, seq, clock, 0, 'n', st.n)
  end
  writes[2] = pack_state(st)
  rcall('HSET', KEYS[k - 2], unpack(writes))
  rcall('RPUSH', KEYS[k - 1], unpack(log))
  at = at + 5
end
return replies

-- The floor of a grant whose decision and state were made outside Redis (BENCHMARKS.md, section
-- 6.5): as grant_only.lua, but the state is neither decoded nor encoded. The service's state
-- blob is compared with an expected one (here the call's packed requests stand in for both: a
-- design where replicas decide would send the blob it decided on and the new one) and written as
-- is. What is left is the cost of the commands, the call's arguments and the replies.

local clock = tonumber(ARGV[1])
local replies = {}
local at = 4
for j = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[at + 3])
  local packed = ARGV[at + 4]
  local k = 3 * j
  local ids = request_ids(packed, n)
  local got = rcall('HMGET', KEYS[k - 2], '', n == 1 and ids or unpack(ids))
  local seq = 0
  if got[1] and string.sub(got[1], 1, 8) == string.sub(packed, 1, 8) then seq = 1 end
  local log, writes = {}, { '', packed }
  for r = 1, n do
    local c0, c1 = sunpack('<dd', packed, NUMBERS_SIZE * (r - 1) + 1)
    local rid = n == 1 and ids or ids[r]
    log[#log + 1] = spack(COMPACT, seq, clock, clock, 0, #rid, rid, c0, c1, c0, c1, 0, 1, 'n')
    writes[#writes + 1] = rid
    writes[#writes + 1] = seq
    emit_grant(replies, seq, clock, 0, 'n', ARGV[at + 2])
    seq = seq + 1
  end
  rcall('HSET', KEYS[k - 2], unpack(writes))
  rcall('RPUSH', KEYS[k - 1], unpack(log))
  at = at + 5
end
return replies

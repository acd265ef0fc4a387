-- Admin: an operator's action. ARGV 5: 'clear' ends every cooldown and the overload count;
-- 'reset' forgets the service (every key). Writes nothing else.

local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
if (st.new and not st.migrated) or forget_if_stale(st, now, retention, false) then
  return 'OK'
end
if ARGV[5] == 'clear' then
  for d = 0, 3 do st[CU[d]], st[CS[d]], st[CC[d]] = nil, nil, nil end
  st.ov = nil
  write_state(st)
elseif ARGV[5] == 'reset' then
  redis.call('DEL', K[1], K[2], K[3])
else
  return redis.error_reply('sluice: unknown admin action')
end
return 'OK'

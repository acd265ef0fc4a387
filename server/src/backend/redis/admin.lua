-- Admin: an operator's action. ARGV 5: 'clear' ends every cooldown and the overload count;
-- 'reset' forgets the service (every key). Writes nothing else, so no TTL is needed.

local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
if forget_if_stale(st, now, retention, false) then return 'OK' end
if ARGV[5] == 'clear' then
  redis.call('HDEL', KEYS[1], 'cu0', 'cs0', 'cc0', 'cu1', 'cs1', 'cc1', 'cu2', 'cs2', 'cc2', 'cu3',
    'cs3', 'cc3', 'ov')
elseif ARGV[5] == 'reset' then
  redis.call('DEL', unpack(KEYS))
else
  return redis.error_reply('sluice: unknown admin action')
end
return 'OK'

-- Prune: housekeeping between decisions. Drops leases whose span has passed (a bounded batch)
-- and an expired cooldown, then refreshes the TTLs. Returns the leases still held.

local _, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
prune(st, now, retention, sliding)
expire_all(st, now, retention)
return redis.call('ZCARD', KEYS[2])

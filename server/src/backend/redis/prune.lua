-- Prune: housekeeping between decisions. Drops leases whose span has passed (a bounded batch)
-- and an expired cooldown, forgets a stale service, then refreshes the TTLs if due. Returns the
-- earliest time (Redis µs) a prune could drop a lease: the log's head past its retention (at or
-- before now while more expired leases wait for the next batch); -1 when there is none to wait
-- for: the log is empty, or Redis holds no state of the service (none, or just forgotten).

local _, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
if (st.new and not st.migrated) or forget_if_stale(st, now, retention, false) then return -1 end
local w = begin_writes(st)
prune(st, now, retention, sliding, 0)
expire_all(st, now, retention, false)
if w.dirty then write_state(st) end
if st.hr then return st.hr + retention end
return -1

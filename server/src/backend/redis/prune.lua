-- Prune: housekeeping between decisions. Drops leases whose span has passed (a bounded batch)
-- and an expired cooldown, forgets a stale service, then refreshes the TTLs if due. Returns the
-- earliest time (Redis µs) the next prune could do anything: the log's head past its retention
-- (at or before now while more expired leases wait for the next batch), or, with an empty log,
-- when the service will be forgotten (forget_if_stale); -1 when Redis holds no state of it (none,
-- or just forgotten). A bound for housekeeping only: a call since (an overtake, a reconciliation)
-- can move it earlier, and the pruning then waits for the time given, which delays nothing but
-- memory hygiene.

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
return horizon_of(st) + retention + 1000000

-- Report: lengthen the cooldown, replace a lease's estimate by its real usage in every limit it
-- still weighs on, and remember the provider's answer.
-- ARGV 5 lease nonce ('' for none), 6 lease seq, 7 usage of dimensions 1..3 ("-" keeps the
-- estimate), 8 cooldown length µs ('' for none), 9 its status code, 10 its source, 11 observed
-- status ('' for none), 12 observed headers (opaque).
-- Returns {cooldown_remaining, cooldown_set, usage_applied, lease_unknown}.

local limits, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))

-- Read: the lease, if it is this state's and still held.
local lease, m
if ARGV[5] ~= '' and ARGV[5] == st.n then
  m = member(tonumber(ARGV[6]))
  local rec = redis.call('HGET', KEYS[3], m)
  if rec then
    lease = parse_lease(rec)
    if lease.slot + retention <= now then lease = nil end
  end
end
local usage = {}
for v in string.gmatch(ARGV[7], '%S+') do
  usage[#usage + 1] = tonumber(v) or false -- false for '-'
end

-- Write.
prune(st, now, retention, sliding)
local cooldown_set = 0
if ARGV[8] ~= '' then
  local until_ = now + tonumber(ARGV[8])
  if until_ > num(st, 'cu') then
    st.cu = s(until_)
    redis.call('HSET', KEYS[1], 'cu', st.cu, 'cs', ARGV[9], 'cc', ARGV[10])
    cooldown_set = 1
  end
end

local usage_applied = 0
if lease and #usage == 3 then
  usage_applied = 1
  for d = 1, 3 do
    local new = usage[d]
    local old = lease.cost[d + 1]
    if new and new ~= old then -- false: keep the estimate
      local delta = new - old
      lease.cost[d + 1] = new
      if sliding[d] then
        local key = KEYS[5 + d]
        local rank = redis.call('ZRANK', key, m)
        local after = redis.call('ZCARD', key) - rank
        if after <= rank and after <= SHIFT_BOUND then
          -- This lease and every later one move by delta.
          for _, later in ipairs(redis.call('ZRANGE', key, rank, -1)) do
            redis.call('ZINCRBY', key, s(delta), later)
          end
          st['t' .. d] = s(num(st, 't' .. d) + delta)
        elseif rank <= SHIFT_BOUND then
          -- Equivalently: every earlier lease and the base move by -delta.
          if rank > 0 then
            for _, earlier in ipairs(redis.call('ZRANGE', key, 0, rank - 1)) do
              redis.call('ZINCRBY', key, s(-delta), earlier)
            end
          end
          st['b' .. d] = s(num(st, 'b' .. d) - delta)
        elseif delta > 0 then
          -- Too many leases on both sides: charge at the newest lease, which only overcounts.
          local last = redis.call('ZRANGE', key, -1, -1)
          redis.call('ZINCRBY', key, s(delta), last[1])
          st['t' .. d] = s(num(st, 't' .. d) + delta)
        else
          lease.cost[d + 1] = old -- a refund that cannot be placed exactly is not made
        end
        if num(st, 't' .. d) >= MAX_EXACT or num(st, 'b' .. d) <= -MAX_EXACT then
          return redis.error_reply('sluice: running total beyond 2^53')
        end
        redis.call('HSET', KEYS[1], 'b' .. d, st['b' .. d] or '0', 't' .. d, st['t' .. d] or '0')
      end
      for i, l in ipairs(limits) do
        if l.bucket and l.dim == d and lease.slot + l.span > now then
          local ki, fi = 'k' .. (i - 1), 'f' .. (i - 1)
          local k, f = num(st, ki), num(st, fi)
          if delta > 0 then
            -- A charge beyond one burst counts as one burst: the bucket is overdrawn at most once.
            k, f = pair_add_units(k, f, math.min(delta, l.burst) * l.wg, l.a)
          else
            -- Lowering this lease's cost lowers the GCRA terms up to it; later leases' terms
            -- bound the refund from below.
            local refund = math.min(-delta, l.burst)
            local rk, rf = pair_add_units(k, f, -refund * l.wg, l.a)
            local rank = redis.call('ZRANK', KEYS[2], m)
            local later = redis.call('ZRANGE', KEYS[2], rank + 1, -1)
            if #later <= SHIFT_BOUND then
              local acc_k, acc_f = 0, 0
              for j = #later, 1, -1 do
                local lj = parse_lease(redis.call('HGET', KEYS[3], later[j]))
                acc_k, acc_f = pair_add_units(acc_k, acc_f, lj.cost[d + 1] * l.wg, l.a)
                local tk, tf = pair_add_units(lj.slot + acc_k, acc_f, 0, l.a)
                if pair_less(rk, rf, tk, tf) then rk, rf = tk, tf end
              end
              k, f = rk, rf
            end
          end
          st[ki], st[fi] = s(k), s(f)
          redis.call('HSET', KEYS[1], ki, st[ki], fi, st[fi])
        end
      end
    end
  end
  redis.call('HSET', KEYS[3], m, format_lease(lease))
end

if ARGV[11] ~= '' then
  st.ra = s(now)
  redis.call('HSET', KEYS[1], 'rs', ARGV[11], 'ra', st.ra, 'rh', ARGV[12])
end
redis.call('HSET', KEYS[1], 'hw', s(now))
expire_all(st, now, retention)
local lease_unknown = 0
if ARGV[5] ~= '' and not lease then lease_unknown = 1 end
return { s(math.max(0, num(st, 'cu') - now)), cooldown_set, usage_applied, lease_unknown }

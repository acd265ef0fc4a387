-- Status: the live state of one service, read-only.
-- Returns {now, cooldown_remaining, cooldown_status, cooldown_source, queued, report_status,
-- report_at, report_headers, held, then used, reset_after, the amount in force and remaining of
-- every limit, then the token dimensions' cooldowns, the adaptive scale, then the budget in force
-- of every limit before the scale: amount and burst}.

local limits, sliding = parse_limits(ARGV[2])
local retention = tonumber(ARGV[3])
local st = read_state(true)
local now = math.max(now_micros(), num(st, 'hw'))
local stale = forget_if_stale(st, now, retention, true)
apply_adopted(st, limits)
apply_adaptive(st, limits, now)
local out = { now, 0, '', '', 0, st.rs or '', st.ra or '', st.rh or '', leases_held(st) }
if num(st, 'cu0') > now then
  out[2], out[3], out[4] = num(st, 'cu0') - now, st.cs0 or 0, st.cc0 or ''
end
if latest_slot(st) > now then
  local i = first_at_least(st, E_REACH, now + 1, 0)
  if i then
    local n = log_length(st)
    out[5] = n - i
    -- Tombstones of overtaken leases are no leases.
    if num(st, 'dd') > 0 then
      for at = i, n - 1, 1000 do
        for _, e in ipairs(entries_between(at, math.min(at + 999, n - 1))) do
          if e[E_RANK] == DEAD then out[5] = out[5] - 1 end
        end
      end
    end
  end
end
for _, l in ipairs(limits) do
  local used, reset = 0, 0
  if not stale then used, reset = limit_usage(st, l, now) end
  local amount, remaining = l.amount, math.max(0, l.amount - used)
  if l.bucket then
    -- A scaled bucket holds costs scaled up: shown in tokens (core Ledger::snapshot).
    local sc = stale and FULL or limits.scale
    amount, remaining = scaled(l.amount, sc), share(math.max(0, l.burst - used), sc)
    used = share(used, sc)
  end
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = amount
  out[#out + 1] = remaining
end
-- The token dimensions' cooldowns: remaining, status, source (remaining 0 when none).
for d = 1, 3 do
  if num(st, CU[d]) > now then
    out[#out + 1] = num(st, CU[d]) - now
    out[#out + 1] = st[CS[d]] or 0
    out[#out + 1] = st[CC[d]] or ''
  else
    out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = ''
  end
end
out[#out + 1] = stale and FULL or limits.scale
for _, l in ipairs(limits) do
  out[#out + 1] = l.base or l.amount
  out[#out + 1] = l.burst
end
return out

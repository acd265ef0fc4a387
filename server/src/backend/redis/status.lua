-- Status: the live state of one service, read-only.
-- Returns {now, cooldown_remaining, cooldown_status, cooldown_source, queued, report_status,
-- report_at, report_headers, held, then used and reset_after of every limit}.

local limits, sliding = parse_limits(ARGV[2])
local st = read_state()
local now = math.max(now_micros(), num(st, 'hw'))
local out = { s(now), '0', '', '', '0', st.rs or '', st.ra or '', st.rh or '', '0' }
if num(st, 'cu') > now then
  out[2], out[3], out[4] = s(num(st, 'cu') - now), st.cs or '0', st.cc or ''
end
out[5] = s(redis.call('ZCOUNT', KEYS[2], '(' .. s(now), '+inf'))
out[9] = s(redis.call('ZCARD', KEYS[2]))
for i, l in ipairs(limits) do
  local used, reset = 0, 0
  if l.bucket then
    local k, f = num(st, 'k' .. (i - 1)), num(st, 'f' .. (i - 1))
    if k >= now and (k > now or f > 0) then
      local ahead = (k - now) * l.a + f
      used = -fdiv(-ahead, l.wg)
      reset = -fdiv(-ahead, l.a)
    end
  else
    local d = l.dim
    local total = num(st, 't' .. d)
    local gone = redis.call('ZREVRANGEBYSCORE', KEYS[2], s(now - l.window), '-inf', 'LIMIT', 0, 1)
    local before = num(st, 'b' .. d)
    if #gone > 0 then
      local score = redis.call('ZSCORE', KEYS[5 + d], gone[1])
      if score then before = tonumber(score) end
    end
    used = total - before
    if total > num(st, 'b' .. d) then
      local last = redis.call('ZRANGEBYSCORE', KEYS[5 + d], s(total), s(total), 'LIMIT', 0, 1)
      if #last > 0 then
        local slot = tonumber(redis.call('ZSCORE', KEYS[2], last[1]))
        reset = math.max(0, slot + l.window - now)
      end
    end
  end
  out[#out + 1] = s(used)
  out[#out + 1] = s(reset)
end
return out

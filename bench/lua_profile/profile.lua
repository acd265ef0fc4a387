-- Counts the Lua bytecodes Sluice's acquire script runs per decision, by function and by line
-- (BENCHMARKS.md, section 6.5). Run by host.c's interpreter (see there for the build):
--
--     ./lua-host profile.lua SCRIPTS_DIR [SERVICES [CALLS [WARMUP [LINES]]]]
--
-- It builds the function library as scripts.rs does, over a mock Redis kept in Lua tables (the
-- commands the acquire path calls, with Redis's reply conventions), and sends the calls
-- bench/redis_alone.py sends: 16 acquires per call of 16 services picked among SERVICES (or 16
-- of one service), a request id each, one request and one token limit far above the load, a
-- manual clock at 40,000 decisions a second. After WARMUP calls it counts the bytecodes of CALLS
-- calls with a count hook. Bytecodes, not time: what a change to the scripts' Lua saves, exactly
-- and run to run; what Redis spends in its commands and its C libraries is
-- `bench/redis_alone.py --callgrind`'s to measure.

local SCRIPTS = assert(arg[1], 'usage: profile.lua SCRIPTS_DIR [SERVICES [CALLS [WARMUP [LINES]]]]')
local SERVICES = tonumber(arg[2] or 1000)
local CALLS, WARMUP, LINES = tonumber(arg[3] or 500), tonumber(arg[4] or 2000), tonumber(arg[5] or 40)
local PER_CALL, RATE = 16, 40000
local LIMITS = '0 0 1000000000 1000000 1000000000 1 1 1 0 1000000000000 1000000 1000000000000 1 1'

-- The mock Redis: keys to { t = type, v = value }; missing values read as false, as in scripts.
local db, counts = {}, {}
local function get(k, ty)
  local v = db[k]
  if not v then v = { t = ty, v = {} }; db[k] = v end
  return v
end
local function index(list, i) if i < 0 then return #list + i end return i end
local C = {}
function C.HMGET(k, ...)
  local h, out = db[k], {}
  for i = 1, select('#', ...) do out[i] = h and h.v[select(i, ...)] or false end
  return out
end
function C.HGET(k, f) local h = db[k]; return h and h.v[f] or false end
function C.HSET(k, ...)
  local h, n = get(k, 'hash'), 0
  for i = 1, select('#', ...), 2 do
    local f, v = select(i, ...)
    if h.v[f] == nil then n = n + 1 end
    h.v[f] = tostring(v)
  end
  return n
end
function C.HDEL(k, ...)
  local h, n = db[k], 0
  for i = 1, select('#', ...) do
    local f = select(i, ...)
    if h and h.v[f] then h.v[f] = nil; n = n + 1 end
  end
  return n
end
function C.HGETALL() return {} end
function C.GET() return false end
function C.RPUSH(k, ...)
  local l = get(k, 'list')
  for i = 1, select('#', ...) do l.v[#l.v + 1] = select(i, ...) end
  return #l.v
end
function C.LRANGE(k, a, b)
  local l, out = db[k], {}
  if not l then return out end
  a, b = index(l.v, tonumber(a)), math.min(index(l.v, tonumber(b)), #l.v - 1)
  for i = a, b do out[#out + 1] = l.v[i + 1] end
  return out
end
function C.LINDEX(k, i)
  local l = db[k]
  return l and l.v[index(l.v, tonumber(i)) + 1] or false
end
function C.LTRIM(k, a, b)
  local l = db[k]
  if not l then return 'OK' end
  a, b = index(l.v, tonumber(a)), math.min(index(l.v, tonumber(b)), #l.v - 1)
  local out = {}
  for i = a, b do out[#out + 1] = l.v[i + 1] end
  l.v = out
  if #out == 0 then db[k] = nil end
  return 'OK'
end
function C.EXISTS(...)
  local n = 0
  for i = 1, select('#', ...) do if db[select(i, ...)] then n = n + 1 end end
  return n
end
function C.DEL(...) for i = 1, select('#', ...) do db[select(i, ...)] = nil end return 1 end
function C.PEXPIREAT() return 1 end
function C.ZCOUNT() return 0 end
function C.ZREMRANGEBYSCORE() return 0 end

redis = { registered = {} }
function redis.call(command, ...)
  counts[command] = (counts[command] or 0) + 1
  return assert(C[command], 'the mock has no ' .. command)(...)
end
redis.pcall = redis.call
function redis.error_reply(message) return { err = message } end
function redis.register_function(t) redis.registered[t.function_name] = t.callback end

-- The function library, as scripts.rs builds it.
local function read(name)
  local f = assert(io.open(SCRIPTS .. '/' .. name))
  local text = f:read('*a')
  f:close()
  return text
end
local code = 'local KEYS, ARGV\n'
for _, name in ipairs({ 'common.lua', 'log.lua', 'decide.lua', 'reconcile.lua', 'upgrade.lua' }) do
  code = code .. read(name) .. '\n'
end
local BODIES = { 'acquire', 'family', 'report', 'status', 'prune', 'admin' }
for _, body in ipairs(BODIES) do
  code = code .. '\nlocal function run_' .. body .. '()\n' .. read(body .. '.lua') .. '\nend\n'
end
for _, body in ipairs(BODIES) do
  code = code .. "redis.register_function{function_name = 'sluice_" .. body
    .. "', callback = function(keys, args) begin_call(keys, args); return run_" .. body .. '() end}\n'
end
assert(loadstring(code, 'library'))()
local acquire = redis.registered.sluice_acquire

-- The calls, as bench/redis_alone.py makes them.
math.randomseed(1)
local now = 1800000000000000
local function one_call()
  now = now + PER_CALL * 1000000 / RATE
  local groups = {}
  if SERVICES >= PER_CALL then
    local taken = {}
    while #groups < PER_CALL do
      local s = math.random(0, SERVICES - 1)
      if not taken[s] then taken[s] = true; groups[#groups + 1] = { s, 1 } end
    end
  else
    groups[1] = { 0, PER_CALL }
  end
  local keys, args = {}, { tostring(now), tostring(2 ^ 20), tostring(#groups) }
  for _, g in ipairs(groups) do
    local tag = '{profile:bench-' .. g[1] .. '}'
    keys[#keys + 1], keys[#keys + 2], keys[#keys + 3] = tag .. ':ledger', tag .. ':leases', tag .. ':held'
    local numbers, ids = {}, {}
    for _ = 1, g[2] do
      local rid = string.format('%08x%08x%08x%08x', math.random(0, 2147483646),
        math.random(0, 2147483646), math.random(0, 2147483646), math.random(0, 2147483646))
      numbers[#numbers + 1] = struct.pack('<dddddddd', 1, 100, 0, 0, 0, 0, 0, -1)
      ids[#ids + 1] = struct.pack('<H', #rid) .. rid
    end
    for _, a in ipairs({ LIMITS, '1000000', string.format('%016x', math.random(0, 2147483646)),
      tostring(g[2]), table.concat(numbers) .. table.concat(ids) }) do
      args[#args + 1] = a
    end
  end
  return keys, args
end

for _ = 1, WARMUP do acquire(one_call()) end
local calls = {}
for i = 1, CALLS do calls[i] = { one_call() } end
local lines, functions, total = {}, {}, 0
counts = {}
local getinfo = debug.getinfo
debug.sethook(function()
  local info = getinfo(2, 'Sl')
  if info and info.short_src == '[string "library"]' then
    total = total + 1
    lines[info.currentline] = (lines[info.currentline] or 0) + 1
    functions[info.linedefined] = (functions[info.linedefined] or 0) + 1
  end
end, '', 1)
for i = 1, CALLS do acquire(calls[i][1], calls[i][2]) end
debug.sethook()

local decisions = CALLS * PER_CALL
local source = {}
for line in (code .. '\n'):gmatch('(.-)\n') do source[#source + 1] = line end
local function top(counted, n, title)
  local rows = {}
  for line, count in pairs(counted) do rows[#rows + 1] = { line, count } end
  table.sort(rows, function(a, b) return a[2] > b[2] end)
  print(title)
  for i = 1, math.min(n, #rows) do
    local text = (source[rows[i][1]] or ''):gsub('^%s+', '')
    print(string.format('%8.1f  %s', rows[i][2] / decisions, text:sub(1, 96)))
  end
end
print(string.format('%d services, %d acquires per call: %.0f bytecodes per decision',
  SERVICES, PER_CALL, total / decisions))
top(functions, 25, '-- per decision, by function (its first line)')
top(lines, LINES, '-- per decision, by line')
local commands = {}
for command, count in pairs(counts) do
  commands[#commands + 1] = string.format('%s %.2f', command, count / decisions)
end
table.sort(commands)
print('commands per decision: ' .. table.concat(commands, ', '))

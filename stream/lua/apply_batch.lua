-- One batch's deltas for ONE shard, applied atomically (see stream/state.py and docs/STATE.md).
-- Every key is in KEYS (all in the shard's hash tag, so one cluster slot); ARGV[2] says where each section starts.
-- KEYS[1] = the shard's epoch; then the offset keys ("o"), the video stats keys ("v"), the topic stats keys ("t"),
-- three keys per user ("u": clicks, click topics, topic counts), the exposure-history keys ("x"), in the order of
-- those lists; then the topic index keys ("tk"), the dirty set ("d"), the popular set ("pop"), the push sets ("push").
-- ARGV[1] = the epoch the worker knows.
-- ARGV[2] = JSON {"tau1", "tau2", "n1", "h": half-life s or 0, "ko", "kv", "kt", "ku", "kx": first KEYS index of each
--   section, "o": [[expected stored offset or -1, new offset]], "v": [[d_exposures, d_clicks, ts or null, video id,
--   [topic ids]]], "tk": {topic id: [established key index, fresh key index]}, "d": dirty key index,
--   "t": [[d_exposures, d_clicks, ts or null, topic id]], "pop": popular key index,
--   "u": [[user id, [clicked ids, oldest first], [their topic ids, comma-separated, same order]]],
--   "x": [[field, increment, field, increment, ...]], "push": [video, topic, user push-set key index] or absent}.
-- Reply: "ok"; "lost:<stored epoch>" when the shard's epoch is not the worker's (its state was lost or rebuilt:
-- nothing is written); or a JSON list of the stored offsets (-1 = none) when one differs from the expected one
-- (another worker applied that partition meanwhile, or the shard lost its offsets): nothing is written.
local stored_epoch = redis.call('GET', KEYS[1])
if stored_epoch ~= ARGV[1] then return 'lost:' .. (stored_epoch or '') end
local b = cjson.decode(ARGV[2])
local conflict, stored = false, {}
local ko, kv, kt, ku, kx = b.ko, b.kv, b.kt, b.ku, b.kx
for i, o in ipairs(b.o) do
  local now = tonumber(redis.call('GET', KEYS[ko + i - 1]) or '-1')
  stored[i] = now
  if now ~= o[1] then conflict = true end
end
if conflict then return cjson.encode(stored) end
for i, o in ipairs(b.o) do redis.call('SET', KEYS[ko + i - 1], string.format('%.0f', o[2])) end

local tau1, tau2, n1, h = b.tau1, b.tau2, b.n1, b.h
local function num(x)
  if x == math.floor(x) and math.abs(x) < 9007199254740992 then return string.format('%.0f', x) end
  return string.format('%.17g', x)
end
local function ctr(e, c) if e > 0 then return c / e end return 0.0 end
local function status(e, c)
  if e < tau1 then return 'fresh' end
  if ctr(e, c) >= tau2 then return 'established' end
  return 'pruned'
end
-- merge_counts of stream.logic: the stored counts (e, c, t; t nil = no reference time) plus a delta (de, dc, dt)
local function merge(e, c, t, de, dc, dt)
  if t == nil or dt == nil then
    if dt == nil then return e + de, c + dc, t end
    return e + de, c + dc, dt
  end
  local ts = math.max(t, dt)
  if h > 0 and ts > t then local f = 0.5 ^ ((ts - t) / h); e, c = e * f, c * f end
  if h > 0 and ts > dt then local f = 0.5 ^ ((ts - dt) / h); de, dc = de * f, dc * f end
  return e + de, c + dc, ts
end
local function read(key)
  local r = redis.call('HMGET', key, 'exposures', 'clicks', 'ts')
  if not r[1] then return 0, 0, nil end
  local t = tonumber(r[3] or '0')
  if t == 0 then t = nil end
  return tonumber(r[1]), tonumber(r[2] or '0'), t
end
local function write(key, e, c, t)
  redis.call('HSET', key, 'exposures', num(e), 'clicks', num(c), 'ctr', string.format('%.17g', ctr(e, c)), 'ts', string.format('%.17g', t or 0))
end

-- grouped writes: key -> list of arguments (one command per key, in chunks Lua's unpack takes)
local zadds, zrems, sadds = {}, {}, {}
local order = {}
local function group(tbl, key, ...)
  local list = tbl[key]
  if list == nil then list = {}; tbl[key] = list; order[#order + 1] = {tbl, key} end
  for i = 1, select('#', ...) do list[#list + 1] = select(i, ...) end
end
local function flush(cmd, key, list)
  for s = 1, #list, 1000 do redis.call(cmd, key, unpack(list, s, math.min(s + 999, #list))) end
end

local dirty_key = b.d and KEYS[b.d]
local tk = b.tk
for i, v in ipairs(b.v) do
  local key, id = KEYS[kv + i - 1], v[4]
  local e0, c0, t0 = read(key)
  local e, c, t = merge(e0, c0, t0, v[1], v[2], v[3])
  write(key, e, c, t)
  local st, old = status(e, c), status(e0, c0)
  local changed = st ~= old or (st == 'established' and ctr(e, c) ~= ctr(e0, c0))
  for _, topic in ipairs(v[5]) do
    local index = tk[topic]
    local est, fresh = KEYS[index[1]], KEYS[index[2]]
    if st == 'established' then
      if changed then group(zadds, est, string.format('%.17g', ctr(e, c)), id) end
      if old ~= 'established' then group(zrems, fresh, id) end
    elseif st == 'fresh' then
      if old ~= 'fresh' then group(zadds, fresh, num(e), id); group(zrems, est, id) end
    elseif old ~= 'pruned' then
      group(zrems, est, id); group(zrems, fresh, id)
    end
    if changed then group(sadds, dirty_key, topic) end
  end
end
local popular = {}
for i, v in ipairs(b.t) do
  local key = KEYS[kt + i - 1]
  local e0, c0, t0 = read(key)
  local e, c, t = merge(e0, c0, t0, v[1], v[2], v[3])
  write(key, e, c, t)
  popular[#popular + 1] = num(c)
  popular[#popular + 1] = v[4]
end
if #popular > 0 then flush('ZADD', KEYS[b.pop], popular) end

-- users: the last N1 clicks (newest first), beside them the topics each had when clicked, and the topic votes
for i, u in ipairs(b.u) do
  local base = ku + 3 * (i - 1)
  local key, tkey, hkey, clicks, topics = KEYS[base], KEYS[base + 1], KEYS[base + 2], u[2], u[3]
  for s = 1, #clicks, 1000 do
    redis.call('LPUSH', key, unpack(clicks, s, math.min(s + 999, #clicks)))
    redis.call('LPUSH', tkey, unpack(topics, s, math.min(s + 999, #topics)))
  end
  redis.call('LTRIM', key, 0, n1 - 1)
  redis.call('LTRIM', tkey, 0, n1 - 1)
  local votes, voted = {}, {}
  for _, raw in ipairs(redis.call('LRANGE', tkey, 0, n1 - 1)) do
    for t in string.gmatch(raw, '[^,]+') do
      local n = votes[t]
      if n == nil then voted[#voted + 1] = t; votes[t] = 1 else votes[t] = n + 1 end
    end
  end
  redis.call('DEL', hkey)
  local args = {}
  for _, t in ipairs(voted) do args[#args + 1] = t; args[#args + 1] = votes[t] end
  flush('HSET', hkey, args)
end

-- users' exposure history (stream.user_exposure_counts): the increments come folded from the worker
for i, incr in ipairs(b.x) do
  local key = KEYS[kx + i - 1]
  for j = 1, #incr, 2 do redis.call('HINCRBY', key, incr[j], incr[j + 1]) end
end

for _, entry in ipairs(order) do
  local tbl, key = entry[1], entry[2]
  if tbl == zrems then flush('ZREM', key, tbl[key]) end
end
for _, entry in ipairs(order) do
  local tbl, key = entry[1], entry[2]
  if tbl == zadds then flush('ZADD', key, tbl[key]) elseif tbl == sadds then flush('SADD', key, tbl[key]) end
end
if b.push then
  local function ids(list, at)
    local out = {}
    for i, entry in ipairs(list) do out[i] = entry[at] end
    return out
  end
  if #b.v > 0 then flush('SADD', KEYS[b.push[1]], ids(b.v, 4)) end
  if #b.t > 0 then flush('SADD', KEYS[b.push[2]], ids(b.t, 4)) end
  if #b.u > 0 then flush('SADD', KEYS[b.push[3]], ids(b.u, 1)) end
end
return 'ok'

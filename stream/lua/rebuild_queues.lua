-- Rebuild the served queues of a group of topics of a one-shard layout, atomically (so no batch can interleave and
-- no WATCH is needed): the Lua twin of stream.logic.build_queue (tests/stream/test_stream_state.py checks them).
-- KEYS: per topic (established index, fresh index, served queue), then the dirty-topics set; all in shard 0.
-- ARGV: keep, sample size, fresh share, cold-start fresh, max queue length, PRNG seed, return queues (0/1), topic ids.
-- Per topic: the top `keep` established videos by CTR (ties: lower id first), fresh videos drawn uniformly from a
-- ZRANDMEMBER sample (shuffled with the seeded PRNG: ZRANDMEMBER's reply order is not random) and placed at ranks
-- floor((k + 1/2)*L/F); the queue is rewritten with scores L - rank and the topic leaves the dirty set.
-- needs: replace_queue.lua
-- Append the members of flat's entries i..j (ZREVRANGE ... WITHSCORES: member, score; equal scores come in
-- descending byte order) to out in ascending numeric order. Ids without a sign sort numerically by (length, bytes):
-- the run reversed is in ascending byte order, so bucketing it by length keeps each bucket sorted, with no compare.
local function ids_ascending(flat, i, j, out)
  local buckets, lengths = {}, {}
  for r = j, i, -1 do
    local id = flat[2 * r - 1]
    if string.byte(id, 1) == 45 then  -- a negative id: the general sort
      local run = {}
      for q = i, j do run[#run + 1] = {flat[2 * q - 1], tonumber(flat[2 * q - 1])} end
      table.sort(run, function(a, b) return a[2] < b[2] end)
      for q = 1, #run do out[#out + 1] = run[q][1] end
      return
    end
    local bucket = buckets[#id]
    if not bucket then bucket = {}; buckets[#id] = bucket; lengths[#lengths + 1] = #id end
    bucket[#bucket + 1] = id
  end
  table.sort(lengths)
  for _, length in ipairs(lengths) do
    local bucket = buckets[length]
    for q = 1, #bucket do out[#out + 1] = bucket[q] end
  end
end
local keep, sample_size = tonumber(ARGV[1]), tonumber(ARGV[2])
local share, cold_start, max_length = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
math.randomseed(tonumber(ARGV[6]))
local want_queues = ARGV[7] == '1'
local n_topics = (#KEYS - 1) / 3
local out = {}
for t = 1, n_topics do
  local est_key, fresh_key, queue_key = KEYS[3 * t - 2], KEYS[3 * t - 1], KEYS[3 * t]
  local ranked = {}
  if keep > 0 then
    local flat = redis.call('ZREVRANGE', est_key, 0, keep - 1, 'WITHSCORES')
    local n, i = #flat / 2, 1
    while i <= n do  -- CTR descending already; each run of equal CTRs (equal doubles reply as equal strings) by id
      local j = i
      while j < n and flat[2 * j + 2] == flat[2 * i] do j = j + 1 end
      if j == i then ranked[#ranked + 1] = flat[2 * i - 1] else ids_ascending(flat, i, j, ranked) end
      i = j + 1
    end
  end
  local n_available = redis.call('ZCARD', fresh_key)
  local sample = {}
  if sample_size > 0 and n_available > 0 then sample = redis.call('ZRANDMEMBER', fresh_key, sample_size) end
  local in_ranked = {}
  for i = 1, #ranked do in_ranked[ranked[i]] = true end
  local unique, seen = {}, {}
  for i = 1, #sample do
    local v = sample[i]
    if not seen[v] then
      seen[v] = true
      if not in_ranked[v] then unique[#unique + 1] = v end
    end
  end
  local n_distinct = 0
  for _ in pairs(seen) do n_distinct = n_distinct + 1 end
  -- fresh_count(len(ranked), min(n_available, distinct sample), share, cold_start), capped by the free places
  local wanted
  if #ranked == 0 then wanted = cold_start else wanted = math.ceil(share * #ranked / (1.0 - share) - 1e-9) end
  local n_fresh = math.max(0, math.min(wanted, math.min(n_available, n_distinct)))
  n_fresh = math.min(n_fresh, max_length - #ranked, #unique)
  for i = 1, n_fresh do  -- partial Fisher-Yates: unique[1..n_fresh] is a uniform random draw in random order
    local j = math.random(i, #unique)
    unique[i], unique[j] = unique[j], unique[i]
  end
  local total = #ranked + n_fresh
  local fresh_at = {}
  for k = 0, n_fresh - 1 do fresh_at[math.floor((k + 0.5) * total / n_fresh)] = true end
  local queue, e, f = {}, 1, 1
  for rank = 0, total - 1 do
    if fresh_at[rank] then queue[#queue + 1] = unique[f]; f = f + 1 else queue[#queue + 1] = ranked[e]; e = e + 1 end
  end
  replace_queue(queue_key, queue, total)
  redis.call('SREM', KEYS[#KEYS], ARGV[7 + t])
  if want_queues then out[#out + 1] = queue else out[#out + 1] = total end
end
return out

-- Rebuild the served queues of a group of topics of a one-shard layout, atomically (so no batch can interleave and
-- no WATCH is needed): the Lua twin of stream.logic.build_queue (tests/stream/test_stream_state.py checks them).
-- KEYS: per topic (established index, fresh index, served queue), then the dirty-topics set; all in shard 0.
-- ARGV: keep, sample size, fresh share, cold-start fresh, max queue length, PRNG seed, return queues (0/1), topic ids.
-- Per topic: the top `keep` established videos by CTR (ties: lower id first, also across the cut), fresh videos drawn uniformly from a
-- ZRANDMEMBER sample (shuffled with the seeded PRNG: ZRANDMEMBER's reply order is not random) and placed at ranks
-- floor((k + 1/2)*L/F); the queue is rewritten with scores L - rank and the topic leaves the dirty set.
-- needs: replace_queue.lua
-- Append to out the `limit` numerically smallest of `ids` (decimal ids in ascending byte order, as Redis orders
-- equal scores), smallest first. Ids without a sign sort numerically by (length, bytes), so bucketing them by length
-- keeps each bucket sorted with no compare; a signed id (outside the contract) falls back to a numeric sort.
local function append_ascending(ids, out, limit)
  local buckets, lengths = {}, {}
  for r = 1, #ids do
    local id = ids[r]
    if string.byte(id, 1) == 45 then
      local run = {}
      for q = 1, #ids do run[q] = {ids[q], tonumber(ids[q])} end
      table.sort(run, function(a, b) return a[2] < b[2] end)
      for q = 1, math.min(limit, #run) do out[#out + 1] = run[q][1] end
      return
    end
    local bucket = buckets[#id]
    if not bucket then bucket = {}; buckets[#id] = bucket; lengths[#lengths + 1] = #id end
    bucket[#bucket + 1] = id
  end
  table.sort(lengths)
  local added = 0
  for _, length in ipairs(lengths) do
    local bucket = buckets[length]
    for q = 1, #bucket do
      if added == limit then return end
      out[#out + 1] = bucket[q]
      added = added + 1
    end
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
    local n = #flat / 2
    -- CTR descending already; each run of equal CTRs (equal doubles reply as equal strings) is ordered by id. The run
    -- at the cut may go on past it, where Redis kept its largest ids: entries cut..n are that run, read whole below.
    local cut = n + 1
    if n == keep then
      cut = n
      while cut > 1 and flat[2 * cut - 2] == flat[2 * n] do cut = cut - 1 end
    end
    local i = 1
    while i < cut do
      local j = i
      while j < cut - 1 and flat[2 * j + 2] == flat[2 * i] do j = j + 1 end
      if j == i then
        ranked[#ranked + 1] = flat[2 * i - 1]
      else
        local run = {}
        for r = j, i, -1 do run[#run + 1] = flat[2 * r - 1] end  -- reversed: ascending bytes
        append_ascending(run, ranked, j - i + 1)
      end
      i = j + 1
    end
    if cut <= n then
      append_ascending(redis.call('ZRANGEBYSCORE', est_key, flat[2 * n], flat[2 * n]), ranked, n - cut + 1)
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

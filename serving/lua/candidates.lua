-- Candidate generation for one user in ONE round trip, on a single Redis holding one shard (redis.shards = 1).
-- It is serving.candidates.CandidateGenerator's Python reader (the reference) run inside Redis: same votes, ties,
-- quotas, draw order, popular fallback and skipping of corrupt entries.
--
-- KEYS[1] = the user's click list (KeyLayout.user_clicks), KEYS[2] = the shard's popular topics (KeyLayout.popular(0)).
-- The other keys depend on what the user clicked, so they cannot be declared before the script runs; they are built
-- from key templates made by topicfs.keys.KeyLayout (the only place the layout lives): ARGV[1]..ARGV[2] = head and
-- tail of a video's topic list key, ARGV[3]..ARGV[4] = head and tail of a topic's queue key. With one shard every key
-- shares one hash tag, so the script touches one slot. ARGV[5..7] = N1, N2, n.
--
-- Ids stay strings: the script compares them only, and canonical decimal strings are equal exactly when the integers
-- are; a topic id's numeric order is (length, text). An entry that is not a canonical id in 0..2^63-1 (or a popular
-- score that is not a finite number in (0, 2^53]) is skipped and counted.
-- Reply: {source, {topic_id...}, {votes...}, {candidates per topic...}, "video,video,...", "topic,topic,...",
--         "clicked,clicked,...", "topics of clicked 1;topics of clicked 2;...", {kind, count, example, ...}}
local vt_head, vt_tail, q_head, q_tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n1, n2, n = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local find, floor, huge = string.find, math.floor, math.huge
local INT64_MAX, MAX_VOTES = '9223372036854775807', 9007199254740992

local function is_id(s)
  if s == '0' then return true end
  if not find(s, '^[1-9]%d*$') then return false end
  local len = #s
  return len < 19 or (len == 19 and s <= INT64_MAX)
end
-- numeric order of two canonical non-negative ids
local function id_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

local skipped_kinds, skipped_count, skipped_example = {}, {}, {}
local function skip(kind, example)
  if not skipped_count[kind] then
    skipped_kinds[#skipped_kinds + 1] = kind
    skipped_count[kind], skipped_example[kind] = 0, example
  end
  skipped_count[kind] = skipped_count[kind] + 1
end

-- a read of one key; a key holding another type is skipped (counted) and reads as `empty`, other errors are raised
local function read_key(empty, command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    if find(reply.err, '^WRONGTYPE') then skip('wrong_type', key); return empty end
    error(reply)
  end
  return reply
end

-- split_quota: largest remainder; remainder ties go to the earlier entry
local function split_quota(weights, slots)
  local quota, total = {}, 0.0
  for i = 1, #weights do total = total + weights[i] end
  if total <= 0 or slots == 0 then
    for i = 1, #weights do quota[i] = 0 end
    return quota
  end
  local remainder, order, left = {}, {}, slots
  for i = 1, #weights do
    local share = slots * weights[i] / total
    local whole = floor(share)
    quota[i], remainder[i], order[i] = whole, share - whole, i
    left = left - whole
  end
  table.sort(order, function(a, b)
    if remainder[a] ~= remainder[b] then return remainder[a] > remainder[b] end
    return a < b
  end)
  for k = 1, math.min(left, #order) do quota[order[k]] = quota[order[k]] + 1 end
  return quota
end

-- the user's last N1 clicks (newest first) and their topic lists
local raw_clicked = read_key({}, 'LRANGE', KEYS[1], 0, n1 - 1)
local clicked, exclude, n_exclude = {}, {}, 0
for i = 1, #raw_clicked do
  local v = raw_clicked[i]
  if is_id(v) then
    clicked[#clicked + 1] = v
    if not exclude[v] then exclude[v] = true; n_exclude = n_exclude + 1 end
  else
    skip('click', v)
  end
end

local raw_topics, topics, weights, vote_text = {}, {}, {}, {}
local source = 'none'
if #clicked > 0 then
  source = 'history'
  local count, newest, ids = {}, {}, {}
  for i = 1, #clicked do
    local raw = read_key(false, 'GET', vt_head .. clicked[i] .. vt_tail)
    if not raw then raw = '' end
    local parts, valid = {}, true
    if raw ~= '' then
      for part in string.gmatch(raw .. ',', '([^,]*),') do
        if part ~= '' then
          if not is_id(part) then valid = false; break end
          parts[#parts + 1] = part
        end
      end
    end
    if not valid then
      skip('topic_list', raw)
      parts = {}
    end
    raw_topics[i] = table.concat(parts, ',')
    local once = {}
    for _, part in ipairs(parts) do
      if not once[part] then
        once[part] = true
        local c = count[part]
        if c then count[part] = c + 1 else count[part] = 1; newest[part] = i; ids[#ids + 1] = part end
      end
    end
  end
  -- the top N2 by (votes desc, newest click asc, id asc): a partial selection sort, not a sort of every topic
  for pick = 1, math.min(n2, #ids) do
    local best = pick
    local bc, bn, bi = count[ids[pick]], newest[ids[pick]], ids[pick]
    for j = pick + 1, #ids do
      local t = ids[j]
      local c = count[t]
      if c > bc or (c == bc and (newest[t] < bn or (newest[t] == bn and id_less(t, bi)))) then
        best, bc, bn, bi = j, c, newest[t], t
      end
    end
    ids[pick], ids[best] = ids[best], ids[pick]
  end
  for i = 1, math.min(n2, #ids) do
    topics[i], weights[i], vote_text[i] = ids[i], count[ids[i]], tostring(count[ids[i]])
  end
end
if #topics == 0 then
  -- the shard's top N2 popular topics with clicks, read in chunks of N2 until N2 valid ones are found, a zero score
  -- ends them or the ZSET does: corrupt entries never hide valid ones
  local start = 0
  while true do
    local popular = read_key({}, 'ZREVRANGE', KEYS[2], start, start + n2 - 1, 'WITHSCORES')
    local done = #popular < 2 * n2
    for i = 1, #popular, 2 do
      local t, score = popular[i], popular[i + 1]
      local x = tonumber(score)
      if not is_id(t) or x == nil or x ~= x or x > MAX_VOTES or x < 0 then
        skip('popular', t .. ' ' .. score)
      elseif x > 0 then
        if #topics < n2 then topics[#topics + 1], weights[#weights + 1], vote_text[#vote_text + 1] = t, x, score end
      else
        done = true
      end
    end
    if done or #topics >= n2 then break end
    start = start + n2
  end
  if #topics > 0 then source = 'popular' else source = 'none' end
end

-- draw_candidates on the topics' queues, each read lazily in growing chunks from its head (the Python reader's
-- first chunk: the quota plus what may be skipped there, plus 16; then 2 * depth + n)
local k = #topics
local taken, out_video, out_topic = {}, {}, {}
for i = 1, k do taken[i] = 0 end
if k > 0 and n > 0 then
  local quota = split_quota(weights, n)
  local queue, loaded, complete, position, depth = {}, {}, {}, {}, {}
  for i = 1, k do
    -- of the clicked videos only those of topic i (its votes) can stand in queue i
    local hide = n_exclude
    if source == 'history' then hide = math.min(n_exclude, weights[i]) end
    queue[i], loaded[i], complete[i], position[i], depth[i] = {}, 0, false, 0, quota[i] + hide + 16
  end
  -- true: queue i has an entry at position[i]; false: it is exhausted. Members are checked when the draw visits
  -- them (a corrupt one is skipped there), so a member the draw never reaches costs nothing.
  local function available(i)
    while position[i] >= loaded[i] and not complete[i] do
      local start, stop = loaded[i], depth[i] - 1
      local members = read_key({}, 'ZREVRANGE', q_head .. topics[i] .. q_tail, start, stop)
      local q = queue[i]
      for j = 1, #members do q[start + j] = members[j] end
      loaded[i] = start + #members
      if #members < stop - start + 1 then complete[i] = true end
      depth[i] = 2 * depth[i] + n
    end
    return position[i] < loaded[i]
  end
  local seen, drawn = {}, 0
  local live = {}
  for i = 1, k do if weights[i] > 0 then live[#live + 1] = i end end
  while drawn < n and #live > 0 do
    local progressed = false
    for li = 1, #live do
      local i = live[li]
      if taken[i] < quota[i] then
        local q = queue[i]
        while true do
          if position[i] >= loaded[i] and not available(i) then break end  -- loads more, or the queue is dry
          local p = position[i] + 1
          position[i] = p
          local v = q[p]
          if exclude[v] or seen[v] then
            -- clicked or drawn: valid ids, skipped
          elseif not is_id(v) then
            skip('queue_member', v)
          else
            seen[v] = true
            drawn = drawn + 1
            out_video[drawn], out_topic[drawn] = v, topics[i]
            taken[i] = taken[i] + 1
            progressed = true
            break
          end
        end
      end
    end
    local exhausted, any = {}, false
    for li = 1, #live do
      local i = live[li]
      if taken[i] < quota[i] and position[i] >= loaded[i] and not available(i) then  -- a queue with entries left is not dry
        exhausted[i] = true; any = true
      end
    end
    if any then
      -- pass a dry queue's unfilled slots on to the topics that can still fill them
      local still, still_weights, missing = {}, {}, n
      for i in pairs(exhausted) do quota[i] = taken[i] end
      for _, i in ipairs(live) do
        if not exhausted[i] then still[#still + 1] = i; still_weights[#still_weights + 1] = weights[i] end
      end
      for i = 1, k do missing = missing - quota[i] end
      live = still
      local extra = split_quota(still_weights, missing)
      for j, i in ipairs(live) do quota[i] = quota[i] + extra[j] end
    elseif not progressed then
      break
    end
  end
end
local skipped = {}
for _, kind in ipairs(skipped_kinds) do
  skipped[#skipped + 1] = kind
  skipped[#skipped + 1] = skipped_count[kind]
  skipped[#skipped + 1] = skipped_example[kind]
end
return {source, topics, vote_text, taken, table.concat(out_video, ','), table.concat(out_topic, ','),
        table.concat(clicked, ','), table.concat(raw_topics, ';'), skipped}

-- Shared by rebuild_queues.lua and write_queue.lua (each says `-- needs: replace_queue.lua`; stream.state.lua joins
-- this file in front of them: a Redis script cannot load another).
-- Replace the served queue `key` by ids[1..n] in served order: the first gets score n, the last 1. ZADD takes 500
-- pairs at a time: Lua's unpack() fails past about 8,000 values.
local function replace_queue(key, ids, n)
  redis.call('DEL', key)
  for start = 1, n, 500 do
    local args = {}
    for rank = start, math.min(start + 499, n) do
      args[#args + 1] = n - rank + 1
      args[#args + 1] = ids[rank]
    end
    redis.call('ZADD', key, unpack(args))
  end
end

-- Replace a served queue atomically. KEYS[1] = the queue; ARGV = video ids in served order (the first gets score #ARGV).
redis.call('DEL', KEYS[1])
local n = #ARGV
for start = 1, n, 500 do
  local args = {}
  for rank = start, math.min(start + 499, n) do
    args[#args + 1] = n - rank + 1
    args[#args + 1] = ARGV[rank]
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
return n

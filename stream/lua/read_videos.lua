-- The stored counts and topics of a registration chunk's videos, in one round trip (StreamStore.register_videos), and
-- the pusher's read of changed video / topic statistics (StreamStore.stats_frame: stats keys only, ARGV[1] = #KEYS).
-- KEYS: stats keys, then video-topics keys (one shard); ARGV[1] = number of stats keys.
-- The reply is one JSON string: decoding thousands of RESP replies in Python costs more than the chunk's logic.
local out = {}
local n_stats = tonumber(ARGV[1])
for i = 1, #KEYS do
  if i <= n_stats then
    out[i] = redis.call('HMGET', KEYS[i], 'exposures', 'clicks', 'ts')
  else
    out[i] = redis.call('GET', KEYS[i])
  end
end
return cjson.encode(out)

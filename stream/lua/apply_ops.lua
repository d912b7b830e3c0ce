-- Every write of a registration chunk for one shard in one atomic call. KEYS: the keys written (one shard);
-- ARGV[1] = JSON list of commands [name, key index, arg, ...] (all strings but the index), computed in Python by
-- StreamStore.register_videos.
for _, op in ipairs(cjson.decode(ARGV[1])) do
  op[2] = KEYS[op[2]]
  redis.call(unpack(op))
end
return 1

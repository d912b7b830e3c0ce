-- Read and clear a set atomically. KEYS[1] = the set. Reply: its members.
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members

-- Replace a served queue atomically. KEYS[1] = the queue; ARGV = video ids in served order (the first gets score #ARGV).
-- needs: replace_queue.lua
replace_queue(KEYS[1], ARGV, #ARGV)
return #ARGV

-- read: a consistent snapshot of invocations (no change).
-- FLAGS: no-writes (it only reads: it runs even when Redis is out of memory)
-- KEYS[1] spec     KEYS[2] status   KEYS[3] owner      KEYS[4] retries    KEYS[5] stalls
-- KEYS[6] result   KEYS[7] error    KEYS[8] history    KEYS[9] waiting_for KEYS[10] waited_by
-- ARGV[1] call id (see the prelude)  ARGV[2] channel (unused)  ARGV[3..] ids
-- Returns: for each id, the 10 values of KEYS order (nil where absent), flattened.
local out = {}
for i = 3, #ARGV do
  for k = 1, #KEYS do out[#out + 1] = redis.call('HGET', KEYS[k], ARGV[i]) end
end
return out

-- fail: end a queued (not yet claimed) invocation FAILED with an error, or replace the error
-- of one that is already FAILED (the provisional error wait stores for a recursive call).
-- KEYS[1] state         KEYS[2] error         KEYS[3] queue
-- KEYS[4] reg_index     KEYS[5] ctl           KEYS[6] final_at
-- KEYS[7] waited_by  (the final event also goes to the runners of waiting invocations)
-- KEYS[8] counts        KEYS[9] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] invocation id  ARGV[4] error payload
-- Returns: 1 FAILED now (or error replaced); 0 unknown, claimed or final otherwise.
local id, payload = ARGV[3], ARGV[4]
local status, _, raw = state_of(id)
if status == 'FAILED' then
  redis.call('HSET', K.error, id, payload)
  return 1
end
if status ~= 'REGISTERED' and status ~= 'REROUTED' and status ~= 'RETRY' then return 0 end
redis.call('ZREM', K.queue, id)
unindex(id)
redis.call('HSET', K.error, id, payload)
move(id, 'FAILED', nil, raw)
return 1

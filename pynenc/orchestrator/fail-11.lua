-- fail: end a queued (not yet claimed) invocation FAILED with an error, or replace the error
-- of one that is already FAILED (the provisional error wait stores for a recursive call).
-- KEYS[1] status      KEYS[2] error      KEYS[3] history      KEYS[4] queue
-- KEYS[5] reg_index   KEYS[6] ctl        KEYS[7] final_at     KEYS[8] owner
-- KEYS[9] waited_by  (the final event also goes to the runners of waiting invocations)
-- KEYS[10] counts     KEYS[11] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] invocation id  ARGV[4] error payload
-- Returns: 1 FAILED now (or error replaced); 0 unknown, claimed or final otherwise.
local id, payload = ARGV[3], ARGV[4]
local status = redis.call('HGET', K.status, id)
if status == 'FAILED' then
  redis.call('HSET', K.error, id, payload)
  return 1
end
if status ~= 'REGISTERED' and status ~= 'REROUTED' and status ~= 'RETRY' then return 0 end
redis.call('ZREM', K.queue, id)
unindex(id)
redis.call('HSET', K.error, id, payload)
move(id, 'FAILED', nil)
return 1

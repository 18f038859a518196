-- retry: an operator sends a FAILED, KILLED or CONCURRENCY_CONTROLLED_FINAL invocation back
-- to the queue (REROUTED, at the back); its error is cleared.
-- KEYS[1] status      KEYS[2] error      KEYS[3] history      KEYS[4] queue
-- KEYS[5] seq         KEYS[6] fseq       KEYS[7] priority     KEYS[8] ctl
-- KEYS[9] reg_index   KEYS[10] wake      KEYS[11] final_at    KEYS[12] owner
-- KEYS[13] waited_by (declared because the shared move may publish to waiters' runners)
-- KEYS[14] counts     KEYS[15] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] invocation id
-- Returns: 1 re-queued; 0 unknown or not in one of those statuses.
local id = ARGV[3]
local status = redis.call('HGET', K.status, id)
if status ~= 'FAILED' and status ~= 'KILLED' and status ~= 'CONCURRENCY_CONTROLLED_FINAL' then return 0 end
redis.call('HDEL', K.error, id)
redis.call('ZREM', K.final_at, id) -- no longer final: the result_ttl sweep must not take it
move(id, 'REROUTED', nil)
enqueue(id, false)
return 1

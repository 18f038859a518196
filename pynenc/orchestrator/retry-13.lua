-- retry: an operator sends a FAILED, KILLED or CONCURRENCY_CONTROLLED_FINAL invocation back
-- to the queue (REROUTED, at the back); its error is cleared.
-- KEYS[1] state         KEYS[2] error         KEYS[3] queue
-- KEYS[4] seq           KEYS[5] fseq          KEYS[6] priority      KEYS[7] ctl
-- KEYS[8] reg_index     KEYS[9] wake          KEYS[10] final_at
-- KEYS[11] waited_by  (declared because the shared move may publish to waiters' runners)
-- KEYS[12] counts       KEYS[13] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] invocation id
-- Returns: 1 re-queued; 0 unknown or not in one of those statuses.
local id = ARGV[3]
local status, _, raw = state_of(id)
if status ~= 'FAILED' and status ~= 'KILLED' and status ~= 'CONCURRENCY_CONTROLLED_FINAL' then return 0 end
redis.call('HDEL', K.error, id)
redis.call('ZREM', K.final_at, id) -- no longer final: the result_ttl sweep must not take it
move(id, 'REROUTED', nil, raw)
enqueue(id, false)
return 1

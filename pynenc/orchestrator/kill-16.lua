-- kill: an operator ends a non-final invocation KILLED (result waiters get InvocationKilledError).
-- KEYS[1] state         KEYS[2] leases
-- KEYS[3] waiting_for   KEYS[4] waited_by     KEYS[5] ctl           KEYS[6] running_keys
-- KEYS[7] parked        KEYS[8] queue         KEYS[9] fseq          KEYS[10] seq
-- KEYS[11] priority     KEYS[12] reg_index    KEYS[13] wake         KEYS[14] final_at
-- KEYS[15] counts       KEYS[16] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] invocation id
-- Returns: 1 killed; 0 unknown, already final, or in recovery (nothing changed).
local id = ARGV[3]
local status = status_of(id)
if not status or FINAL[status] or status == 'PENDING_RECOVERY' or status == 'RUNNING_RECOVERY' then
  return 0
end
redis.call('ZREM', K.queue, id)
unindex(id)
redis.call('ZREM', K.leases, id)
release_key(id)
drop_waits(id)
move(id, 'KILLED', nil)
return 1

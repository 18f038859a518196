-- kill: an operator ends a non-final invocation KILLED (result waiters get InvocationKilledError).
-- KEYS[1] status      KEYS[2] owner      KEYS[3] leases       KEYS[4] history
-- KEYS[5] waiting_for KEYS[6] waited_by  KEYS[7] ctl          KEYS[8] running_keys
-- KEYS[9] parked      KEYS[10] queue     KEYS[11] fseq        KEYS[12] seq
-- KEYS[13] priority   KEYS[14] reg_index KEYS[15] wake        KEYS[16] final_at
-- KEYS[17] counts     KEYS[18] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] invocation id
-- Returns: 1 killed; 0 unknown, already final, or in recovery (nothing changed).
local id = ARGV[3]
local status = redis.call('HGET', K.status, id)
if not status or FINAL[status] or status == 'PENDING_RECOVERY' or status == 'RUNNING_RECOVERY' then
  return 0
end
redis.call('ZREM', K.queue, id)
unindex(id)
redis.call('ZREM', K.leases, id)
release_key(id)
drop_waits(id)
redis.call('HDEL', K.owner, id)
move(id, 'KILLED', nil)
return 1

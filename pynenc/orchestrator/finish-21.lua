-- finish: the owner reports how a run ended (SUCCESS, FAILED or RETRY).
-- KEYS[1] status      KEYS[2] history    KEYS[3] owner       KEYS[4] leases
-- KEYS[5] result      KEYS[6] error      KEYS[7] retries     KEYS[8] waiting_for
-- KEYS[9] waited_by   KEYS[10] ctl       KEYS[11] running_keys KEYS[12] parked
-- KEYS[13] queue      KEYS[14] seq       KEYS[15] fseq       KEYS[16] priority
-- KEYS[17] reg_index  KEYS[18] wake      KEYS[19] final_at
-- KEYS[20] counts     KEYS[21] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] invocation id
-- ARGV[5] outcome kind (SUCCESS|FAILED|RETRY)  ARGV[6] payload (result or error)
-- Returns: 1 done; 0 the runner does not own the invocation (nothing changed).
-- Error "PYNENC -2" for an unknown outcome kind (checked before anything is written).
local runner, id, kind, payload = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if kind ~= 'SUCCESS' and kind ~= 'FAILED' and kind ~= 'RETRY' then
  return redis.error_reply('PYNENC -2 finish: unknown outcome kind ' .. tostring(kind))
end
return finish_run(runner, id, kind, payload)

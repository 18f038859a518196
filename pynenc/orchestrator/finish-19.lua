-- finish: the owner reports how a run ended (SUCCESS, FAILED or RETRY).
-- KEYS[1] state         KEYS[2] leases
-- KEYS[3] result        KEYS[4] error         KEYS[5] retries       KEYS[6] waiting_for
-- KEYS[7] waited_by     KEYS[8] ctl           KEYS[9] running_keys  KEYS[10] parked
-- KEYS[11] queue        KEYS[12] seq          KEYS[13] fseq         KEYS[14] priority
-- KEYS[15] reg_index    KEYS[16] wake         KEYS[17] final_at
-- KEYS[18] counts       KEYS[19] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] invocation id
-- ARGV[5] outcome kind (SUCCESS|FAILED|RETRY)  ARGV[6] payload (result or error)
-- Returns: 1 done; 0 the runner does not own the invocation (nothing changed).
-- Error "PYNENC -2" for an unknown outcome kind (checked before anything is written).
local runner, id, kind, payload = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if kind ~= 'SUCCESS' and kind ~= 'FAILED' and kind ~= 'RETRY' then
  return redis.error_reply('PYNENC -2 finish: unknown outcome kind ' .. tostring(kind))
end
return finish_run(runner, id, kind, payload)

-- finish_claim: finish (as finish does) and, in the same atomic step, claim up to N more for the
-- same runner (as claim does), so a busy runner makes one round trip per invocation.
-- KEYS[1] state         KEYS[2] leases
-- KEYS[3] result        KEYS[4] error         KEYS[5] retries       KEYS[6] waiting_for
-- KEYS[7] waited_by     KEYS[8] ctl           KEYS[9] running_keys  KEYS[10] parked
-- KEYS[11] queue        KEYS[12] seq          KEYS[13] fseq         KEYS[14] priority
-- KEYS[15] reg_index    KEYS[16] wake         KEYS[17] final_at     KEYS[18] spec
-- KEYS[19] counts       KEYS[20] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] invocation id
-- ARGV[5] outcome kind (SUCCESS|FAILED|RETRY)  ARGV[6] payload (result or error)
-- ARGV[7] max count to claim  ARGV[8] lease seconds
-- ARGV[9] id of an invocation this runner claimed ahead (PENDING) to start now, or ''
-- ARGV[10] how many of the claimed go RUNNING at once (the others stay PENDING, claimed ahead)
-- ARGV[11] lease seconds of those claimed ahead (max_pending_seconds)
-- Returns: flat list {finish code (1 done, 0 not owned: nothing finished), start code (1 started,
-- 0 not owned as PENDING, or no id given), lease expiry, then a triple id, spec JSON,
-- num_retries per invocation claimed}. The start and the claim happen either way.
-- Error "PYNENC -2" for an unknown outcome kind (checked before anything is written).
local runner, id, kind, payload = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if kind ~= 'SUCCESS' and kind ~= 'FAILED' and kind ~= 'RETRY' then
  return redis.error_reply('PYNENC -2 finish: unknown outcome kind ' .. tostring(kind))
end
local done = finish_run(runner, id, kind, payload)
local started = 0
if ARGV[9] ~= '' then started = start_pending(runner, ARGV[9]) end
local expires = time_in(tonumber(ARGV[8]))
local out = {done, started, expires}
local pending_expires = time_in(tonumber(ARGV[11]))
claim_runs(runner, tonumber(ARGV[7]), expires, out, tonumber(ARGV[10]), pending_expires)
return out

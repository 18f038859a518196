-- help: the runner of a paused waiter runs what it waits on itself. It finishes the awaited
-- invocation it ran (as finish does, when one is given) and claims the next awaited one still
-- queued, to run it now; when there is none and everything the waiter waits on is final, it
-- resumes the waiter (as resume does). One atomic step.
-- KEYS[1] status      KEYS[2] history    KEYS[3] owner       KEYS[4] leases
-- KEYS[5] result      KEYS[6] error      KEYS[7] retries     KEYS[8] waiting_for
-- KEYS[9] waited_by   KEYS[10] ctl       KEYS[11] running_keys KEYS[12] parked
-- KEYS[13] queue      KEYS[14] seq       KEYS[15] fseq       KEYS[16] priority
-- KEYS[17] reg_index  KEYS[18] wake      KEYS[19] final_at   KEYS[20] spec
-- KEYS[21] counts     KEYS[22] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id
-- ARGV[4] waiter id, or '' not to resume it here (more awaited ids to look at follow)
-- ARGV[5] id of the awaited invocation to finish, or '' (nothing ran yet)
-- ARGV[6] its outcome kind (SUCCESS|FAILED|RETRY)  ARGV[7] its payload (result or error)
-- ARGV[8] lease seconds  ARGV[9..] awaited ids to claim from, in order of preference
-- Returns: flat list {finish code (1 done, 0 not owned: nothing finished, -1 nothing to
-- finish), how many awaited ids were examined, 1 when the waiter was resumed else 0, lease
-- expiry, then at most one triple id, spec JSON, num_retries of the invocation claimed}.
-- Error "PYNENC -2" for an unknown outcome kind (checked before anything is written).
local runner, waiter, id, kind, payload = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local done = -1
if id ~= '' then
  if kind ~= 'SUCCESS' and kind ~= 'FAILED' and kind ~= 'RETRY' then
    return redis.error_reply('PYNENC -2 help: unknown outcome kind ' .. tostring(kind))
  end
  done = finish_run(runner, id, kind, payload)
end
local expires = time_in(tonumber(ARGV[8]))
local out = {done, 0, 0, expires}
out[2] = claim_awaited(runner, {unpack(ARGV, 9)}, expires, out)
if #out == 4 and waiter ~= '' and owned_by(runner, waiter, {PAUSED=true}) then
  local everything_final = true
  for _, awaited in ipairs(get_list(K.waiting_for, waiter)) do
    if not FINAL[redis.call('HGET', K.status, awaited) or 'SUCCESS'] then  -- gone counts as final
      everything_final = false
      break
    end
  end
  if everything_final then
    drop_waits(waiter)
    move(waiter, 'RESUMED', runner)
    out[3] = 1
  end
end
return out

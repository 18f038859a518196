-- help: the runner of a paused waiter runs what it waits on itself. It finishes the awaited
-- invocation it ran (as finish does, when one is given) and claims the next awaited one still
-- queued, to run it now; when there is none and everything the waiter waits on is final, it
-- resumes the waiter (as resume does). One atomic step.
-- KEYS[1] state         KEYS[2] leases
-- KEYS[3] result        KEYS[4] error         KEYS[5] retries       KEYS[6] waiting_for
-- KEYS[7] waited_by     KEYS[8] ctl           KEYS[9] running_keys  KEYS[10] parked
-- KEYS[11] queue        KEYS[12] seq          KEYS[13] fseq         KEYS[14] priority
-- KEYS[15] reg_index    KEYS[16] wake         KEYS[17] final_at     KEYS[18] spec
-- KEYS[19] counts       KEYS[20] failed_at  (status counts and failure times: see the prelude)
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
    if not FINAL[status_of(awaited) or 'SUCCESS'] then  -- gone counts as final
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

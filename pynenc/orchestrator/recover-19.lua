-- recover: invocations whose lease expired (their runner died or hung) go back to the queue.
-- KEYS[1] state         KEYS[2] leases        KEYS[3] stalls
-- KEYS[4] final_at      KEYS[5] waiting_for   KEYS[6] waited_by
-- KEYS[7] ctl           KEYS[8] running_keys  KEYS[9] parked        KEYS[10] queue
-- KEYS[11] fseq         KEYS[12] seq          KEYS[13] priority     KEYS[14] reg_index
-- KEYS[15] wake         KEYS[16] error        KEYS[17] spec
-- KEYS[18] counts       KEYS[19] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] max_stalls  ARGV[4] at most this many
-- Returns: the recovered ids. Each went PENDING -> PENDING_RECOVERY (no stall counted: it never
-- started) or RUNNING/PAUSED/RESUMED -> RUNNING_RECOVERY (its stall counter +1), running key and
-- wait edges released, then REROUTED
-- (front of its priority) or, past max_stalls, FAILED with a StalledInvocationError.
local max_stalls, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.leases, id)
  local status, runner = state_of(id)
  if status and OWNED[status] then
    local recovery = 'RUNNING_RECOVERY'
    local stalls
    if status == 'PENDING' then
      -- Claimed ahead and never started: losing it is not the task's fault, no stall counted.
      recovery = 'PENDING_RECOVERY'
      stalls = tonumber(redis.call('HGET', K.stalls, id) or '0')
    else
      stalls = redis.call('HINCRBY', K.stalls, id, 1)
    end
    drop_waits(id)
    release_key(id)
    if stalls > max_stalls then
      local message = 'invocation ' .. id .. ' of ' .. task_of(id) .. ' lost its runner ' .. stalls ..
        ' times (died or hung; max_stalls=' .. max_stalls .. '), so it is not retried again'
      redis.call('HSET', K.error, id, error_payload('pynenc.exceptions.StalledInvocationError', message, nil))
      moves(id, {recovery, 'FAILED'}, runner, true)
    else
      moves(id, {recovery, 'REROUTED'}, runner, true)
      enqueue(id, true)
    end
    out[#out + 1] = id
  end
end
return out

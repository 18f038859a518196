-- recover: invocations whose lease expired (their runner died or hung) go back to the queue.
-- KEYS[1] status      KEYS[2] owner      KEYS[3] leases       KEYS[4] stalls
-- KEYS[5] history     KEYS[6] final_at   KEYS[7] waiting_for  KEYS[8] waited_by
-- KEYS[9] ctl         KEYS[10] running_keys KEYS[11] parked   KEYS[12] queue
-- KEYS[13] fseq       KEYS[14] seq       KEYS[15] priority    KEYS[16] reg_index
-- KEYS[17] wake       KEYS[18] error     KEYS[19] spec
-- KEYS[20] counts     KEYS[21] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] max_stalls  ARGV[4] at most this many
-- Returns: the recovered ids. Each went PENDING -> PENDING_RECOVERY (no stall counted: it never
-- started) or RUNNING/PAUSED/RESUMED -> RUNNING_RECOVERY (its stall counter +1), running key and
-- wait edges released, then REROUTED
-- (front of its priority) or, past max_stalls, FAILED with a StalledInvocationError.
local max_stalls, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', NOW, 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.leases, id)
  local status = redis.call('HGET', K.status, id)
  if status and OWNED[status] then
    local runner = redis.call('HGET', K.owner, id) or ''
    redis.call('HDEL', K.owner, id)
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

-- wait: a running invocation waits for others (PAUSED), with cycle detection; its runner
-- may claim one of them to run itself right away (as help does).
-- KEYS[1] state         KEYS[2] ctl           KEYS[3] waiting_for
-- KEYS[4] waited_by     KEYS[5] priority      KEYS[6] queue
-- KEYS[7] reg_index     KEYS[8] final_at      KEYS[9] error         KEYS[10] spec
-- KEYS[11] retries      KEYS[12] leases       KEYS[13] running_keys  KEYS[14] parked
-- KEYS[15] counts       KEYS[16] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] waiter id
-- ARGV[5] "1" when cycle control is on
-- ARGV[6] lease seconds to claim an awaited one for the runner once PAUSED, or '' (no claim)
-- ARGV[7..] awaited ids
-- Returns: {0} nothing recorded (waiter not owned, or everything awaited is final);
--          {1} edges recorded, awaited re-prioritised, waiter PAUSED (or it already was);
--          with a claim asked and the waiter PAUSED here (or already, when sent again after
--          a lost reply: what that call claimed is returned again): {1, how many awaited ids were
--          examined (from the last, up to 32), lease expiry, then at most one triple id,
--          spec JSON, num_retries of the awaited invocation claimed (RUNNING)};
--          {-10, awaited id, fail_child, chain ids...} a cycle: nothing recorded; the chain
--          runs from the outermost waiter down to the waiter. fail_child = 1 when the awaited
--          one is a fresh REGISTERED repeat created by the waiter: it was taken off the queue and
--          ended FAILED here (so it can never run and recurse) with a provisional CycleDetectedError
--          naming ids only; the caller replaces that error with the readable one (fail script).
local runner, waiter = ARGV[3], ARGV[4]

-- With a claim asked: claim one of the awaited (the last ones first, up to 32) for the runner.
local function claim_for_runner()
  if ARGV[6] == '' then return {1} end
  local expires = time_in(tonumber(ARGV[6]))
  local out = {1, 0, expires}
  local from_last = {}
  for i = #ARGV, math.max(7, #ARGV - 31), -1 do from_last[#from_last + 1] = ARGV[i] end
  out[2] = claim_awaited(runner, from_last, expires, out)
  return out
end

-- Already PAUSED by this runner: a call sent again after its reply was lost; the wait was
-- recorded, and what the lost call claimed is handed over again (claim_awaited adopts it).
if owned_by(runner, waiter, {PAUSED=true}) then
  if AGAIN then return claim_for_runner() end
  return {1}
end
if not owned_by(runner, waiter, {RUNNING=true, RESUMED=true}) then return {0} end
local pending = {}
for i = 7, #ARGV do
  local status = status_of(ARGV[i])
  if status and not FINAL[status] then pending[#pending + 1] = ARGV[i] end
end
if #pending == 0 then return {0} end
if ARGV[5] == '1' then
  local chain, seen, calls = {waiter}, {[waiter] = true}, {}
  local index = 1
  while index <= #chain do
    for _, parent in ipairs(get_list(K.waited_by, chain[index])) do
      if not seen[parent] and redis.call('HEXISTS', K.state, parent) == 1 then
        seen[parent] = true
        chain[#chain + 1] = parent
      end
    end
    index = index + 1
  end
  for _, member in ipairs(chain) do
    local ck = ctl(member).ck
    if ck then calls[ck] = true end
  end
  for _, awaited in ipairs(pending) do
    local c = ctl(awaited)
    if seen[awaited] or (c.ck and calls[c.ck]) then
      local fail_child = 0
      if status_of(awaited) == 'REGISTERED' and c.p == waiter then
        fail_child = 1
      end
      local out = {-10, awaited, fail_child}
      for i = #chain, 1, -1 do out[#out + 1] = chain[i] end
      if fail_child == 1 then
        redis.call('ZREM', K.queue, awaited)
        unindex(awaited)
        local ids = {}
        for i = 4, #out do ids[#ids + 1] = out[i] end
        ids[#ids + 1] = awaited
        redis.call('HSET', K.error, awaited, error_payload('pynenc.exceptions.CycleDetectedError',
          'cycle of waits detected, it could never finish: ' .. table.concat(ids, ' -> waits for -> '), nil))
        move(awaited, 'FAILED', nil)
      end
      return out
    end
  end
end
local waiting = get_list(K.waiting_for, waiter)
local known = {}
for _, awaited in ipairs(waiting) do known[awaited] = true end
for _, awaited in ipairs(pending) do
  if not known[awaited] then
    known[awaited] = true
    waiting[#waiting + 1] = awaited
    local waiters = get_list(K.waited_by, awaited)
    waiters[#waiters + 1] = waiter
    set_list(K.waited_by, awaited, waiters)
    redis.call('HINCRBY', K.priority, awaited, 1)
    if redis.call('ZSCORE', K.queue, awaited) then
      redis.call('ZINCRBY', K.queue, -PRIORITY_UNIT, awaited)
    end
  end
end
set_list(K.waiting_for, waiter, waiting)
move(waiter, 'PAUSED', runner)
return claim_for_runner()

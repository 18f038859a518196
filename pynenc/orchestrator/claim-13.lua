-- claim: pop up to N runnable invocations (highest priority first, FIFO within) for a runner.
-- KEYS[1] queue         KEYS[2] status    KEYS[3] history   KEYS[4] spec
-- KEYS[5] ctl           KEYS[6] reg_index KEYS[7] running_keys KEYS[8] parked
-- KEYS[9] owner         KEYS[10] leases   KEYS[11] retries  KEYS[12] final_at
-- KEYS[13] wake
-- ARGV[1] caller's clock (unused)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] max count  ARGV[5] lease seconds
-- Returns: flat list {lease expiry, then a triple id, spec JSON, num_retries per invocation now RUNNING}.
-- Popped invocations whose running key is held elsewhere go PENDING -> CONCURRENCY_CONTROLLED
-- (parked on the key) or PENDING -> CONCURRENCY_CONTROLLED_FINAL and are not returned.
-- When the queue is left empty the wake markers are dropped, so idle runners block in BLPOP
-- instead of waking for work that is already taken.
local runner, max_count = ARGV[3], tonumber(ARGV[4])
local expires = string.format('%.6f', NOWN + tonumber(ARGV[5]))
local out = {expires}
local claimed = 0
while claimed < max_count do
  local popped = redis.call('ZPOPMIN', K.queue)
  if #popped == 0 then break end
  local id = popped[1]
  local status = redis.call('HGET', K.status, id)
  -- Only statuses that may start (a stray entry of any other status is dropped, untouched).
  if status and TRANSITIONS[status] and TRANSITIONS[status].PENDING then
    local c = ctl(id)
    unindex(id)
    local holder = c.nk and redis.call('HGET', K.running_keys, c.nk)
    if holder and holder ~= id then
      if c.rr then
        moves(id, {'PENDING', 'CONCURRENCY_CONTROLLED'}, runner)
        local parked = get_list(K.parked, c.nk)
        parked[#parked + 1] = id
        set_list(K.parked, c.nk, parked)
      else
        moves(id, {'PENDING', 'CONCURRENCY_CONTROLLED_FINAL'}, runner)
      end
    else
      if c.nk then redis.call('HSET', K.running_keys, c.nk, id) end
      moves(id, {'PENDING', 'RUNNING'}, runner)
      redis.call('HSET', K.owner, id, runner)
      redis.call('ZADD', K.leases, expires, id)
      out[#out + 1] = id
      out[#out + 1] = redis.call('HGET', K.spec, id) or '{}'
      out[#out + 1] = redis.call('HGET', K.retries, id) or '0'
      claimed = claimed + 1
    end
  end
end
if redis.call('ZCARD', K.queue) == 0 then redis.call('DEL', K.wake) end
return out

-- register: store and enqueue a batch of calls (registration concurrency checked per call).
-- KEYS[1] spec          KEYS[2] ctl           KEYS[3] state
-- KEYS[4] reg_index     KEYS[5] queue
-- KEYS[6] seq           KEYS[7] priority      KEYS[8] wake
-- KEYS[9] fseq          KEYS[10] final_at  (declared because the shared enqueue/move may touch them)
-- KEYS[11] counts       KEYS[12] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] number of calls N
-- ARGV[4 + 5i .. 8 + 5i] (i = 0..N-1): id, spec JSON, ctl JSON, "1" to refuse different non-key
-- args, task id
-- Returns: flat list of N pairs {id, code}; code 1 created, 0 existing queued invocation
--          (id is the existing one), -1 refused (same key, different other arguments).
local n = tonumber(ARGV[3])
local out = {}
-- The counts cover every stored invocation only when they were kept from the start: they
-- are declared valid when the app stores nothing yet (a new app, or one whose records all
-- expired or were purged), starting from zero. Until then `pynenc status` counts by scanning.
if redis.call('HEXISTS', K.counts, '~valid') == 0 and redis.call('HLEN', K.state) == 0 then
  redis.call('DEL', K.counts)
  redis.call('HSET', K.counts, '~valid', NOW)
end
local created = 0
-- Queue positions for the whole batch, reserved at once in call order (a position left
-- unused by an existing call is a harmless gap: only the order counts). New calls have
-- priority 0, so a position is the queue score itself.
local first_seq = redis.call('INCRBY', K.seq, n) - n + 1
-- The batch's writes, one call per hash at the end. A call with a registration key is
-- written at once instead, so a later call of the same batch finds it by that key.
local specs, ctls, states, queued = {}, {}, {}, {}
for i = 0, n - 1 do
  local base = 4 + i * 5
  local id, spec, ctl_json, refuse = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local task = ARGV[base + 4]
  local keyed = string.find(ctl_json, '"rk":', 1, true) ~= nil
  -- (a running key alone does not change how it is registered, but its state says it has keys)
  local has_keys = keyed or string.find(ctl_json, '"nk":', 1, true) ~= nil
  local c
  local result_id, code = id, 1
  if redis.call('HEXISTS', K.state, id) == 1 then
    code = 0 -- the same call sent again (a retried request): already stored
  elseif keyed then
    c = cjson.decode(ctl_json)
    local existing = redis.call('HGET', K.reg_index, c.rk)
    if existing then
      local status = status_of(existing)
      if status and QUEUED[status] then
        result_id, code = existing, 0
        if refuse == '1' and ctl(existing).ck ~= c.ck then code = -1 end
      end
    end
  end
  if code == 1 then
    local score = string.format('%.0f', ORDER_BASE + first_seq + i)
    if keyed then
      redis.call('HSET', K.spec, id, spec)
      redis.call('HSET', K.ctl, id, ctl_json)
      CTL_CACHE[id] = c
      TASKS[id] = task
      record_new(id, 'REGISTERED', task, true)
      redis.call('ZADD', K.queue, score, id)
      redis.call('HSETNX', K.reg_index, c.rk, id)
    else
      local at = #specs
      specs[at + 1], specs[at + 2] = id, spec
      ctls[at + 1], ctls[at + 2] = id, ctl_json
      states[at + 1], states[at + 2] = id, new_state('REGISTERED', task, has_keys)
      queued[at + 1], queued[at + 2] = score, id
      count_move(task, false, 'REGISTERED')
    end
    created = created + 1
  end
  out[#out + 1] = result_id
  out[#out + 1] = code
end
if #specs > 0 then
  redis.call('HSET', K.spec, unpack(specs))
  redis.call('HSET', K.ctl, unpack(ctls))
  redis.call('HSET', K.state, unpack(states))
  redis.call('ZADD', K.queue, unpack(queued))
end
if created > 0 then wake_runners(created) end
return out

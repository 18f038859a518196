-- read: a consistent snapshot of invocations (no change).
-- FLAGS: no-writes (it only reads: it runs even when Redis is out of memory)
-- KEYS[1] spec          KEYS[2] state         KEYS[3] retries       KEYS[4] stalls
-- KEYS[5] result        KEYS[6] error         KEYS[7] waiting_for   KEYS[8] waited_by
-- ARGV[1] call id (see the prelude)  ARGV[2] channel (unused)  ARGV[3..] ids
-- Returns: for each id, 10 values (nil where absent), flattened: spec, status, owner, retries,
-- stalls, result, error, history, waiting_for, waited_by (the state split in its three parts).
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local status, owner, history = false, false, false
  local raw = redis.call('HGET', K.state, id)
  if raw then
    local s, o, _, _, at = parse_state(raw)
    if s then
      status, history = s, string.sub(raw, at)
      if o ~= '' then owner = o end
    end
  end
  out[#out + 1] = redis.call('HGET', K.spec, id)
  out[#out + 1] = status
  out[#out + 1] = owner
  for _, key in ipairs({K.retries, K.stalls, K.result, K.error}) do out[#out + 1] = redis.call('HGET', key, id) end
  out[#out + 1] = history
  out[#out + 1] = redis.call('HGET', K.waiting_for, id)
  out[#out + 1] = redis.call('HGET', K.waited_by, id)
end
return out

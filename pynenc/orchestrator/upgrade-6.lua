-- upgrade: move invocations stored by pynenc 0.1 (status, owner and history in three hashes)
-- into the state hash, at most ARGV[3] per call (a connecting process calls it until none is
-- left, see RedisStateBackend). An id that already has a state keeps it.
-- KEYS[1] status        KEYS[2] owner         KEYS[3] history       KEYS[4] state
-- KEYS[5] ctl           KEYS[6] counts  (ctl: each invocation's task and keys; counts: declared
-- for the prelude's end_call, an upgrade changes no count)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel (unused)  ARGV[3] at most this many
-- Returns: how many invocations are left in the old hashes.
local page = redis.call('HSCAN', K.status, 0, 'COUNT', tonumber(ARGV[3]))[2]
for i = 1, #page, 2 do
  local id, status = page[i], page[i + 1]
  local owner = ''
  if OWNED[status] then owner = redis.call('HGET', K.owner, id) or '' end
  local history = redis.call('HGET', K.history, id) or '[]'
  local c = ctl(id)
  redis.call('HSETNX', K.state, id, state_value(status, owner, c.t or '?', keyed_flag(c), history))
  redis.call('HDEL', K.status, id)
  redis.call('HDEL', K.owner, id)
  redis.call('HDEL', K.history, id)
end
local left = redis.call('HLEN', K.status)
if left == 0 then redis.call('DEL', K.owner, K.history) end
return left

-- release: a stopping runner gives unfinished work back (no stall is counted).
-- KEYS[1] status      KEYS[2] owner      KEYS[3] leases       KEYS[4] history
-- KEYS[5] waiting_for KEYS[6] waited_by  KEYS[7] ctl          KEYS[8] running_keys
-- KEYS[9] parked      KEYS[10] queue     KEYS[11] fseq        KEYS[12] seq
-- KEYS[13] priority   KEYS[14] reg_index KEYS[15] wake        KEYS[16] final_at
-- KEYS[17] counts     KEYS[18] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4..] ids
-- Returns: the number released. Owned ones go REROUTED at the front of their priority,
-- with running key and wait edges released; ids the runner does not own are left alone.
local runner = ARGV[3]
local count = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  if owned_by(runner, id, OWNED) then
    redis.call('ZREM', K.leases, id)
    redis.call('HDEL', K.owner, id)
    drop_waits(id)
    release_key(id)
    move(id, 'REROUTED', runner)
    enqueue(id, true)
    count = count + 1
  end
end
return count

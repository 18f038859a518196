-- release: a stopping runner gives unfinished work back (no stall is counted).
-- KEYS[1] state         KEYS[2] leases
-- KEYS[3] waiting_for   KEYS[4] waited_by     KEYS[5] ctl           KEYS[6] running_keys
-- KEYS[7] parked        KEYS[8] queue         KEYS[9] fseq          KEYS[10] seq
-- KEYS[11] priority     KEYS[12] reg_index    KEYS[13] wake         KEYS[14] final_at
-- KEYS[15] counts       KEYS[16] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4..] ids
-- Returns: the number released. Owned ones go REROUTED at the front of their priority,
-- with running key and wait edges released; ids the runner does not own are left alone.
local runner = ARGV[3]
local count = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  if owned_by(runner, id, OWNED) then
    redis.call('ZREM', K.leases, id)
    drop_waits(id)
    release_key(id)
    move(id, 'REROUTED', runner)
    enqueue(id, true)
    count = count + 1
  end
end
return count

-- resume: PAUSED -> RESUMED for the owner; drops the waiter's wait edges.
-- KEYS[1] state         KEYS[2] waiting_for   KEYS[3] waited_by     KEYS[4] final_at
-- KEYS[5] counts        KEYS[6] failed_at  (status counts and failure times: see the prelude)
-- KEYS[7] ctl  (the task of the invocation, for the counts)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] waiter id
-- Returns: 1 resumed; 0 the runner no longer owns the paused invocation.
local runner, id = ARGV[3], ARGV[4]
-- Already RESUMED by this runner: a retried call whose first reply was lost.
if owned_by(runner, id, {RESUMED=true}) then return 1 end
if not owned_by(runner, id, {PAUSED=true}) then return 0 end
drop_waits(id)
move(id, 'RESUMED', runner)
return 1

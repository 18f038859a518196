-- resume: PAUSED -> RESUMED for the owner; drops the waiter's wait edges.
-- KEYS[1] status  KEYS[2] owner  KEYS[3] waiting_for  KEYS[4] waited_by  KEYS[5] history  KEYS[6] final_at
-- KEYS[7] counts     KEYS[8] failed_at  (status counts and failure times: see the prelude)
-- KEYS[9] ctl        (the task of the invocation, for the counts)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] waiter id
-- Returns: 1 resumed; 0 the runner no longer owns the paused invocation.
local runner, id = ARGV[3], ARGV[4]
-- Already RESUMED by this runner: a retried call whose first reply was lost.
if owned_by(runner, id, {RESUMED=true}) then return 1 end
if not owned_by(runner, id, {PAUSED=true}) then return 0 end
drop_waits(id)
move(id, 'RESUMED', runner)
return 1

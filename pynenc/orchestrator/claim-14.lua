-- claim: pop up to N runnable invocations (highest priority first, FIFO within) for a runner.
-- KEYS[1] queue         KEYS[2] state         KEYS[3] spec
-- KEYS[4] ctl           KEYS[5] reg_index     KEYS[6] running_keys  KEYS[7] parked
-- KEYS[8] leases        KEYS[9] retries       KEYS[10] final_at
-- KEYS[11] wake         KEYS[12] waited_by  (a CONCURRENCY_CONTROLLED_FINAL event goes to waiters' runners)
-- KEYS[13] counts       KEYS[14] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] max count  ARGV[5] lease seconds
-- Returns: flat list {lease expiry, then a triple id, spec JSON, num_retries per invocation now RUNNING}.
-- Popped invocations whose running key is held elsewhere go PENDING -> CONCURRENCY_CONTROLLED
-- (parked on the key) or PENDING -> CONCURRENCY_CONTROLLED_FINAL and are not returned.
-- When the queue is left empty the wake markers are dropped, so idle runners block in BLPOP
-- instead of waking for work that is already taken.
local runner, max_count = ARGV[3], tonumber(ARGV[4])
local expires = time_in(tonumber(ARGV[5]))
local out = {expires}
claim_runs(runner, max_count, expires, out)
return out

-- expire: forget invocations that became final more than result_ttl seconds ago.
-- FLAGS: allow-oom (it frees memory: it must run when Redis is full)
-- KEYS[1] final_at      KEYS[2] spec          KEYS[3] ctl           KEYS[4] state
-- KEYS[5] retries       KEYS[6] stalls        KEYS[7] result        KEYS[8] error
-- KEYS[9] waiting_for   KEYS[10] waited_by    KEYS[11] priority
-- KEYS[12] counts       KEYS[13] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] result_ttl seconds  ARGV[4] at most this many
-- Returns: the number of invocations removed (call again while it equals ARGV[4]).
-- KEYS[2..11] are exactly the per-invocation hashes: each loses the id's field; the counts
-- lose the removed ids, failed_at their entries.
local cutoff = time_in(-tonumber(ARGV[3]))
local removed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.final_at, '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[4]))) do
  redis.call('ZREM', K.final_at, id)
  local status = status_of(id)
  if status and FINAL[status] then
    count_move(task_name(id), status, false)  -- (the task read before ctl and spec are gone)
    redis.call('ZREM', K.failed_at, id)
    for i = 2, 11 do redis.call('HDEL', KEYS[i], id) end
    removed = removed + 1
  end
end
return removed

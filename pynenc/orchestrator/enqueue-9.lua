-- enqueue: put (or move) an id in the queue at a given priority (the broker's own operation).
-- KEYS[1] queue  KEYS[2] seq  KEYS[3] fseq  KEYS[4] priority  KEYS[5] ctl  KEYS[6] reg_index  KEYS[7] wake
-- KEYS[8] counts     KEYS[9] failed_at  (status counts and failure times: see the prelude)
-- ARGV[1] call id (see the prelude)  ARGV[2] channel (unused)  ARGV[3] id  ARGV[4] priority  ARGV[5] "1" front
-- Returns: 1.
local id, priority = ARGV[3], tonumber(ARGV[4])
if priority > 0 then
  redis.call('HSET', K.priority, id, priority)
else
  redis.call('HDEL', K.priority, id)
end
enqueue(id, ARGV[5] == '1')
return 1

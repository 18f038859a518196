-- info: short-lived entries runners and supervisors publish about themselves.
-- KEYS[1] info  KEYS[2] info_exp
-- ARGV[1] call id (see the prelude)  ARGV[2] channel (unused)  ARGV[3] "put" or "list"
-- put:  ARGV[4] field ("<kind>\0<key>")  ARGV[5] JSON  ARGV[6] ttl seconds   -> returns 1
-- list: ARGV[4] kind                                                        -> flat {key, JSON, ...}
-- Both first drop the expired entries, so the hash never keeps dead runners.
for _, field in ipairs(redis.call('ZRANGEBYSCORE', K.info_exp, '-inf', NOW)) do
  redis.call('HDEL', K.info, field)
  redis.call('ZREM', K.info_exp, field)
end
if ARGV[3] == 'put' then
  redis.call('HSET', K.info, ARGV[4], ARGV[5])
  redis.call('ZADD', K.info_exp, time_in(tonumber(ARGV[6])), ARGV[4])
  return 1
end
local prefix = ARGV[4] .. '\0'
local out = {}
local flat = redis.call('HGETALL', K.info)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) == prefix then
    out[#out + 1] = string.sub(flat[i], #prefix + 1)
    out[#out + 1] = flat[i + 1]
  end
end
return out

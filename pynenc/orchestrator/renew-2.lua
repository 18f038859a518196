-- renew: extend the leases of the invocations a runner still owns.
-- KEYS[1] state         KEYS[2] leases
-- ARGV[1] call id (see the prelude)  ARGV[2] channel  ARGV[3] runner id  ARGV[4] lease seconds  ARGV[5..] ids
-- Returns: the ids the runner no longer owns.
local runner = ARGV[3]
local expires = time_in(tonumber(ARGV[4]))
local lost = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  if owned_by(runner, id, OWNED) then
    redis.call('ZADD', K.leases, expires, id)
  else
    lost[#lost + 1] = id
  end
end
return lost

-- wake: end up to N idle runners' waits for work now, as new work would (the same capped
-- markers as an enqueue leaves): a resuming runner asks the idle ones holding permits for one.
-- KEYS[1] wake
-- ARGV[1] call id (see the prelude)  ARGV[2] channel (unused)  ARGV[3] how many
-- Returns: 1.
wake_runners(tonumber(ARGV[3]))
return 1

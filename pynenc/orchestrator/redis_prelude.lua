-- Shared prelude of every pynenc Redis script, after the ALLOWED table generated from
-- pynenc.status. It is loaded once as the top of the Redis Functions library (each script a
-- function of it), or, with EVALSHA, prepended to each script. Either way each call first
-- sets K (the script's header names -> its KEYS) and calls begin_call(ARGV), then runs the
-- script's body under pcall, then end_call() (the status counts of what the body changed),
-- then raises the body's error again if it raised. Conventions for every script:
--   ARGV[1] the call's id, unique within the calling process (digits); "-" before it when
--           the call is sent again after its reply was lost (the first may have run: the
--           claims adopt what it claimed, see claimed_by_lost_call). Times come from the
--           server clock, so leases and histories do not depend on the clocks of the hosts.
--   ARGV[2] the app's "final" pub/sub channel (not a key)
-- No function here builds a key name: every key comes from K (i.e. KEYS).

-- Per call (set by the call's first lines; a library's functions share these, and Redis
-- runs one call at a time): the call's keys, the server time, the channel, decoded ctl,
-- and what the call changed in the status counts (flushed by end_call).
local K, NOWN, NOW, NOW_S, NOW_US, CHANNEL, CTL_CACHE, TASKS, PLAIN, COUNT_DELTA
-- CALL_ID: ARGV[1] without its "-"; AGAIN: the call is sent again after a lost reply;
-- STAMP: the key under which history entries written now carry CALL_ID: "c" for a claim,
-- "b" for the start of one claimed ahead (false: none).
local CALL_ID, AGAIN, STAMP

-- Times are strings of seconds with six decimals ("1764300000.123456"), built from TIME's
-- own digits: exact, and without formatting a float (glibc's float printing cost a few
-- microseconds each, several times per call). NOW is TIME's two strings joined, padded.
local function set_now(seconds, microseconds)
  NOW_S, NOW_US = tonumber(seconds), tonumber(microseconds)
  NOWN = NOW_S + NOW_US / 1000000
  NOW = seconds .. '.' .. string.sub('00000' .. microseconds, -6)
end

-- The time `seconds` (a number, may be negative or fractional) from now, in NOW's format.
local function time_in(seconds)
  if not (seconds > -1e9 and seconds < 1e9) then  -- far off, or NaN
    return string.format('%.6f', NOWN + seconds)
  end
  local us = NOW_US + math.floor(seconds * 1000000 + 0.5)
  return string.format('%d.%06d', NOW_S + math.floor(us / 1000000), us % 1000000)
end

local function begin_call(argv)
  local time = redis.call('TIME')
  set_now(time[1], time[2])
  CHANNEL = argv[2]
  CALL_ID = argv[1]
  AGAIN = string.sub(CALL_ID, 1, 1) == '-'
  if AGAIN then CALL_ID = string.sub(CALL_ID, 2) end
  STAMP = false
  CTL_CACHE = {}
  TASKS, PLAIN, COUNT_DELTA = {}, {}, {}
end

local FINAL = {SUCCESS=true, FAILED=true, CONCURRENCY_CONTROLLED_FINAL=true, KILLED=true}
local QUEUED = {REGISTERED=true, REROUTED=true, RETRY=true, CONCURRENCY_CONTROLLED=true}
local OWNED = {PENDING=true, RUNNING=true, PAUSED=true, RESUMED=true}
local PRIORITY_UNIT = 4294967296
local ORDER_BASE = 2147483648
local WAKE_CAP = 64
-- A SUCCESS result up to this many bytes rides on the final event ("id<TAB>result"), so a
-- waiter needs no read for it (SUCCESS is never left, so such an event cannot be stale).
local NOTE_MAX = 512

-- Whether pynenc.status allows the move (ALLOWED[from][to]).
local function allowed(from, to)
  local targets = ALLOWED[from]
  return targets ~= nil and targets[to] == true
end

-- Decode stored JSON; a corrupted value reads as empty so one bad entry cannot wedge a script.
local function decode(raw)
  if not raw then return {} end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'table' then return value end
  return {}
end

local function get_list(hash, id)
  return decode(redis.call('HGET', hash, id))
end

local function set_list(hash, id, list)
  if #list == 0 then
    redis.call('HDEL', hash, id)
  else
    redis.call('HSET', hash, id, cjson.encode(list))
  end
end

-- ctl never changes after register: decode it once per script call (CTL_CACHE).
local function ctl(id)
  local c = CTL_CACHE[id]
  if c == nil then
    c = decode(redis.call('HGET', K.ctl, id))
    CTL_CACHE[id] = c
  end
  return c
end

-- What ctl says about keys (rk, nk, rr), read only when the invocation has a registration or
-- running key: a state read in this call that says it has none (PLAIN) saves the read.
local NO_KEYS = {}
local function ctl_keys(id)
  if PLAIN[id] then return NO_KEYS end
  return ctl(id)
end

-- A stored error payload in the format of pynenc.serializer.errors.encode_exception.
local function error_payload(type_name, message, chain)
  local data = {type = type_name, message = message, args = 'j' .. cjson.encode({message}), traceback = ''}
  if chain then data.chain = chain end
  return cjson.encode(data)
end

local function task_of(id)
  return decode(redis.call('HGET', K.spec, id)).task_id or '?'
end

-- ----- status counts ------------------------------------------------------------------------
-- K.counts holds "<status>\t<task id>" -> how many stored invocations of that task are in that
-- status, so `pynenc status` never reads every record. A call adds up what its moves change
-- (count_move: -1 for the status left, +1 for the one entered, per task), and end_call, run
-- after the script's body (also when it raised), writes the net changes, however many moves
-- the call made: one HINCRBY per (status, task) that changed (a busy runner's finish + start
-- + claim nets to REGISTERED -1, SUCCESS +1), or one HMGET and one HSET when more than two
-- changed.
-- The field "~valid" says the counts cover every stored invocation (see register).

-- The task of id: from its state when read in this call, else ctl's "t" (every invocation
-- since counts exist), else its spec.
local function task_name(id)
  local task = TASKS[id]
  if task == nil then
    task = ctl(id).t
    if not task then
      task = (K.spec and task_of(id)) or '?'
    end
    TASKS[id] = task
  end
  return task
end

-- An invocation of task went from status old to new (old false: a new invocation; new
-- false: removed). COUNT_DELTA: task -> status -> net change (no field names built per move).
local function count_move(task, old, new)
  if old == new then return end
  local by_status = COUNT_DELTA[task]
  if not by_status then
    by_status = {}
    COUNT_DELTA[task] = by_status
  end
  if old then by_status[old] = (by_status[old] or 0) - 1 end
  if new then by_status[new] = (by_status[new] or 0) + 1 end
end

local function end_call()
  local fields, changes = {}, {}
  for task, by_status in pairs(COUNT_DELTA) do
    for status, by in pairs(by_status) do
      if by ~= 0 then
        fields[#fields + 1] = status .. '\t' .. task
        changes[#changes + 1] = by
      end
    end
  end
  if #fields <= 2 then  -- a busy runner's call (REGISTERED -1, SUCCESS +1), a batch register
    for i, field in ipairs(fields) do redis.call('HINCRBY', K.counts, field, changes[i]) end
    return
  end
  -- Several tasks or statuses (a fan-out's calls move parents and children): one read and
  -- one write of the hash instead of one HINCRBY each.
  local current = redis.call('HMGET', K.counts, unpack(fields))
  local values = {}
  for i, field in ipairs(fields) do
    values[#values + 1] = field
    values[#values + 1] = string.format('%d', (tonumber(current[i]) or 0) + changes[i])
  end
  redis.call('HSET', K.counts, unpack(values))
end

-- ----- an invocation's state ------------------------------------------------------------------
-- K.state holds, per id, "<status>\t<owner>\t<task>\t<keyed>\t<history>": its status name,
-- the runner holding its lease ('' when none: only OWNED statuses have one), its task id,
-- '1' when it has a registration or running key (ctl must be read to claim or finish it)
-- else '', and its history, a JSON array of {"s": status, "t": time, "r": runner} (see
-- moves). One field, so a transition is one read and one write, and a plain invocation's
-- transitions never read ctl.

-- status, owner, task, keyed and where the history starts in raw; false for a value that is
-- not a state (a corrupted field reads as absent, so one bad entry cannot wedge a script).
local function parse_state(raw)
  local status, owner, task, keyed, at = string.match(raw, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t()')
  if not status or status == '' then return false, '', nil, nil, nil end
  return status, owner, task, keyed, at
end

-- parse_state, noting what it says about id for this call (its task, whether it has keys).
local function note_state(id, raw)
  local status, owner, task, keyed, at = parse_state(raw)
  if status then
    TASKS[id] = task
    PLAIN[id] = keyed == ''
  end
  return status, owner, at
end

-- A state's value from its parts (keyed: the flag, '1' or ''; history: the JSON array). The
-- one place that writes the format, but for moves' append, which copies the history once.
local function state_value(status, owner, task, keyed, history)
  return status .. '\t' .. owner .. '\t' .. task .. '\t' .. keyed .. '\t' .. history
end

-- The keyed flag of an invocation whose ctl is c: '1' with a registration or running key.
local function keyed_flag(c)
  if c.rk or c.nk then return '1' end
  return ''
end

-- A new invocation's state (its first history entry; keyed: it has a registration or running key).
local function new_state(status, task, keyed)
  return state_value(status, '', task, (keyed and '1') or '', '[{"s":"' .. status .. '","t":"' .. NOW .. '"}]')
end

-- The stored state of id (raw) and its status and owner; false, '' when unknown.
local function state_of(id)
  local raw = redis.call('HGET', K.state, id)
  if not raw then return false, '', false end
  local status, owner = note_state(id, raw)
  if not status then return false, '', false end
  return status, owner, raw
end

local function status_of(id)
  return (state_of(id))
end

-- The final event of id, also on the channel of each runner whose paused invocation waits
-- on it ("<channel>:<runner id>"): a paused task's runner listens there, not to every final
-- event of the app.
local function notify_waiting_runners(id, note)
  local raw = redis.call('HGET', K.waited_by, id)
  if not raw then return end  -- the usual case: nobody waits on it from inside a task
  local notified = {}
  for _, waiter in ipairs(decode(raw)) do
    local _, runner = state_of(waiter)
    if runner ~= '' and not notified[runner] then
      notified[runner] = true
      redis.call('PUBLISH', CHANNEL .. ':' .. runner, note)
    end
  end
end

-- A runner id as a JSON string (the last one encoded is kept: a call has one runner).
local LAST_RUNNER, LAST_RUNNER_JSON
local function json_string(runner)
  if runner ~= LAST_RUNNER then
    LAST_RUNNER, LAST_RUNNER_JSON = runner, cjson.encode(runner)
  end
  return LAST_RUNNER_JSON
end

-- Validated status changes (one or several in a row) with their history entries, in one
-- read and one write of the state; final statuses are timestamped and published. The runner
-- is recorded on every entry, or only on the first when first_only (recovery acts for it once).
-- The owner follows the status: a move into an OWNED status from an unowned one gives the
-- lease holder's place to runner (a claim), a move out of OWNED clears it.
-- Returns the new raw state (for a caller that moves the same invocation again).
local function moves(id, news, runner, first_only, known, result)
  -- known: the raw state the caller has just read in this script (saves reading it again);
  -- result: the payload just stored for a SUCCESS (published with it when small)
  local raw = known or redis.call('HGET', K.state, id)
  local current, owner, at = false, '', nil
  if raw then current, owner, at = note_state(id, raw) end
  local first = current
  local encoded = {}
  for i, new in ipairs(news) do
    if current and not allowed(current, new) then
      error({err = 'PYNENC -3 ' .. id .. ' ' .. current .. ' ' .. new})
    end
    local by = ''
    if runner and runner ~= '' and (i == 1 or not first_only) then by = ',"r":' .. json_string(runner) end
    local stamp = ''
    if STAMP then stamp = ',"' .. STAMP .. '":"' .. CALL_ID .. '"' end
    encoded[i] = '{"s":"' .. new .. '","t":"' .. NOW .. '"' .. by .. stamp .. '}'
    current = new
  end
  if not OWNED[current] then
    owner = ''
  elseif owner == '' then
    owner = runner or ''
  end
  local task, keyed, entries = TASKS[id], '', table.concat(encoded, ',')
  if at then  -- task and keyed as note_state parsed them
    if not PLAIN[id] then keyed = '1' end
  else  -- no state stored (or a corrupted one, replaced): ctl says the rest
    local c = ctl(id)
    task, keyed = c.t or '?', keyed_flag(c)
  end
  count_move(task, first, current)
  if at and #raw - at > 1 then  -- entries stored: append to them, copying the history once
    raw = current .. '\t' .. owner .. '\t' .. task .. '\t' .. keyed .. '\t' .. string.sub(raw, at, -2) .. ',' .. entries .. ']'
  else
    raw = state_value(current, owner, task, keyed, '[' .. entries .. ']')
  end
  redis.call('HSET', K.state, id, raw)
  if FINAL[current] then
    redis.call('ZADD', K.final_at, NOW, id)
    -- failures by time, for "failed in the last hour" without reading every final record
    if current == 'FAILED' then redis.call('ZADD', K.failed_at, NOW, id) end
    local note = id
    if result and current == 'SUCCESS' and #result <= NOTE_MAX then note = id .. '\t' .. result end
    redis.call('PUBLISH', CHANNEL, note)
    notify_waiting_runners(id, note)
  end
  return raw
end

local function move(id, new, runner, known, result)
  return moves(id, {new}, runner, false, known, result)
end

-- The invocation's status and raw state when the runner owns it in one of statuses, else false.
local function owned_by(runner, id, statuses)
  local status, owner, raw = state_of(id)
  if not status or not statuses[status] or owner ~= runner then return false end
  return status, raw
end

-- One marker per new invocation (capped), pushed in one call: every idle runner that can
-- take one of them wakes, as if each invocation had been enqueued alone.
local function wake_runners(count)
  local markers = {}
  for i = 1, math.min(count, WAKE_CAP) do markers[i] = '1' end
  redis.call('LPUSH', K.wake, unpack(markers))
  redis.call('LTRIM', K.wake, 0, WAKE_CAP - 1)
end

-- Queue order: higher priority first, FIFO within (front: ahead of that FIFO, newest first).
-- known_priority: the caller knows it (a new invocation: 0); no_wake: the caller wakes
-- runners itself, once for a whole batch (wake_runners).
local function enqueue(id, front, known_priority, no_wake)
  local priority = known_priority or tonumber(redis.call('HGET', K.priority, id) or '0')
  local order
  if front then
    order = ORDER_BASE - redis.call('INCR', K.fseq)
  else
    order = ORDER_BASE + redis.call('INCR', K.seq)
  end
  redis.call('ZADD', K.queue, string.format('%.0f', -priority * PRIORITY_UNIT + order), id)
  local c = ctl_keys(id)
  if c.rk then redis.call('HSETNX', K.reg_index, c.rk, id) end
  if not no_wake then wake_runners(1) end
end

-- A new invocation's first status and history entry (nothing stored before: nothing to read).
local function record_new(id, status, task, keyed)
  redis.call('HSET', K.state, id, new_state(status, task, keyed))
  TASKS[id], PLAIN[id] = task, not keyed
  count_move(task, false, status)
end

local function unindex(id)
  local c = ctl_keys(id)
  if c.rk and redis.call('HGET', K.reg_index, c.rk) == id then
    redis.call('HDEL', K.reg_index, c.rk)
  end
end

-- Give up the running key (if held) and re-queue, at the front, whoever was parked on it.
local function release_key(id)
  local c = ctl_keys(id)
  if not c.nk or redis.call('HGET', K.running_keys, c.nk) ~= id then return end
  redis.call('HDEL', K.running_keys, c.nk)
  local parked = get_list(K.parked, c.nk)
  redis.call('HDEL', K.parked, c.nk)
  for _, parked_id in ipairs(parked) do
    local status, _, raw = state_of(parked_id)
    if status == 'CONCURRENCY_CONTROLLED' then
      move(parked_id, 'REROUTED', nil, raw)
      enqueue(parked_id, true)
    end
  end
end

local function drop_waits(id)
  local raw = redis.call('HGET', K.waiting_for, id)
  if not raw then return end  -- the usual case: it waited on nothing
  for _, awaited in ipairs(decode(raw)) do
    local waiters = get_list(K.waited_by, awaited)
    for i = #waiters, 1, -1 do
      if waiters[i] == id then table.remove(waiters, i) end
    end
    set_list(K.waited_by, awaited, waiters)
  end
  redis.call('HDEL', K.waiting_for, id)
end

-- The owner's report of how a run ended (SUCCESS, FAILED or RETRY; the caller validated
-- the kind): 1 done; 0 when the runner does not own the invocation (nothing changed).
-- FAILED may also end one the runner claimed ahead (PENDING) that cannot start, e.g.
-- its stored call is unreadable: it goes PENDING -> RUNNING -> FAILED.
local FINISHABLE = {RUNNING=true, RESUMED=true}
local FINISHABLE_FAILED = {RUNNING=true, RESUMED=true, PENDING=true}

local function finish_run(runner, id, kind, payload)
  local status, raw = owned_by(runner, id, (kind == 'FAILED' and FINISHABLE_FAILED) or FINISHABLE)
  if not status then return 0 end
  if status == 'PENDING' then
    raw = move(id, 'RUNNING', runner, raw)
  end
  redis.call('ZREM', K.leases, id)
  drop_waits(id)
  if kind == 'SUCCESS' then
    redis.call('HSET', K.result, id, payload)
  else
    redis.call('HSET', K.error, id, payload)
  end
  release_key(id)
  if kind == 'RETRY' then
    redis.call('HINCRBY', K.retries, id, 1)
    move(id, 'RETRY', runner, raw)
    enqueue(id, false)
  else
    move(id, kind, runner, raw, payload)
  end
  return 1
end

-- The triple a claim reply lists for id: id, spec JSON, num_retries.
local function append_claimed(out, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', K.spec, id) or '{}'
  out[#out + 1] = redis.call('HGET', K.retries, id) or '0'
end

-- Whether id's last history entry was written by this call's id under key ("c" claimed, "b"
-- started): what a call sent again after a lost reply looks for.
local function last_entry_stamped(raw, key)
  local last = string.match(raw or '', '.*(%b{})')
  return last ~= nil and string.find(last, '"' .. key .. '":"' .. CALL_ID .. '"', 1, true) ~= nil
end

-- After a lost reply (AGAIN), what the lost call may have claimed for runner: the
-- leased invocations the runner owns whose last history entry carries this call's id, as
-- {id, status}, RUNNING before PENDING. A scan of every lease, only on calls sent again.
local function claimed_by_lost_call(runner)
  local found = {}
  if not AGAIN then return found end
  local ids = redis.call('ZRANGE', K.leases, 0, -1)
  for first = 1, #ids, 1000 do
    local chunk = {unpack(ids, first, math.min(first + 999, #ids))}
    local states = redis.call('HMGET', K.state, unpack(chunk))
    for i, id in ipairs(chunk) do
      local raw = states[i]
      local status, owner = false, ''
      if raw then status, owner = parse_state(raw) end  -- (task and keyed unused here)
      if owner == runner and last_entry_stamped(raw, 'c') then
        if status == 'RUNNING' then
          table.insert(found, 1, {id, status})
        elseif status == 'PENDING' then
          found[#found + 1] = {id, status}
        end
      end
    end
  end
  return found
end

-- What the lost call claimed, handed over again as claimed by this one (leases renewed from
-- now: RUNNING until expires, PENDING until pending_expires); returns how many.
local function adopt_claims(runner, out, expires, pending_expires)
  local found = claimed_by_lost_call(runner)
  for _, item in ipairs(found) do
    local lease = expires
    if item[2] == 'PENDING' then lease = pending_expires or expires end
    redis.call('ZADD', K.leases, lease, item[1])
    append_claimed(out, item[1])
  end
  return #found
end

-- Claim id for a runner (just taken off the queue; status, just read, may go PENDING): true
-- when it is now the runner's, RUNNING when run_now else PENDING (claimed ahead), leased until
-- lease, with a triple id, spec JSON, num_retries appended to out; false when its running key
-- is held elsewhere: it went PENDING -> CONCURRENCY_CONTROLLED (parked on the key) or
-- PENDING -> CONCURRENCY_CONTROLLED_FINAL.
local function claim_one(runner, id, raw, run_now, lease, out)
  local c = ctl_keys(id)
  unindex(id)
  local holder = c.nk and redis.call('HGET', K.running_keys, c.nk)
  if holder and holder ~= id then
    if c.rr then
      moves(id, {'PENDING', 'CONCURRENCY_CONTROLLED'}, runner, false, raw)
      local parked = get_list(K.parked, c.nk)
      parked[#parked + 1] = id
      set_list(K.parked, c.nk, parked)
    else
      moves(id, {'PENDING', 'CONCURRENCY_CONTROLLED_FINAL'}, runner, false, raw)
    end
    return false
  end
  if c.nk then redis.call('HSET', K.running_keys, c.nk, id) end
  STAMP = 'c'
  if run_now then
    moves(id, {'PENDING', 'RUNNING'}, runner, false, raw)
  else
    move(id, 'PENDING', runner, raw)
  end
  STAMP = false
  redis.call('ZADD', K.leases, lease, id)
  append_claimed(out, id)
  return true
end

-- Pop up to max_count runnable invocations for a runner (claim_one each). The first n_running
-- (all when nil) go RUNNING; the others stay PENDING: claimed ahead, started later by the
-- runner (start_pending), with their lease until pending_expires (when given) rather than
-- expires. A popped entry of a status that may not start is dropped, untouched. When the
-- queue is left empty the wake markers are dropped, so idle runners block in BLPOP instead
-- of waking for work that is already taken.
local function claim_runs(runner, max_count, expires, out, n_running, pending_expires)
  local claimed = adopt_claims(runner, out, expires, pending_expires)
  while claimed < max_count do
    local popped = redis.call('ZPOPMIN', K.queue)
    if #popped == 0 then break end
    local id = popped[1]
    local status, _, raw = state_of(id)
    if status and allowed(status, 'PENDING') then
      local run_now = n_running == nil or claimed < n_running
      local lease = expires
      if not run_now then lease = pending_expires or expires end
      if claim_one(runner, id, raw, run_now, lease, out) then claimed = claimed + 1 end
    end
  end
  if redis.call('ZCARD', K.queue) == 0 then redis.call('DEL', K.wake) end
end

-- Claim, to run now, the first of ids (a list) still in the queue: the runner of a paused
-- waiter runs what it waits on itself instead of handing its slot over. Ids not queued
-- (running elsewhere, final, parked) are skipped. Returns how many ids were examined.
local function claim_awaited(runner, ids, expires, out)
  local before = #out
  if adopt_claims(runner, out, expires) > 0 then
    for i, id in ipairs(ids) do
      if id == out[before + 1] then return i end
    end
    return #ids
  end
  for i, id in ipairs(ids) do
    if redis.call('ZREM', K.queue, id) == 1 then
      local status, _, raw = state_of(id)
      if status and allowed(status, 'PENDING') and claim_one(runner, id, raw, true, expires, out) then
        return i
      end
    end
  end
  return #ids
end

-- The owner starts an invocation it claimed ahead (PENDING -> RUNNING): 1, or 0 when it no
-- longer owns it as PENDING (given back, killed, recovered): nothing changed then.
local STARTABLE = {PENDING=true}
local STARTABLE_AGAIN = {PENDING=true, RUNNING=true}

local function start_pending(runner, id)
  local status, raw = owned_by(runner, id, (AGAIN and STARTABLE_AGAIN) or STARTABLE)
  if not status then return 0 end
  if status == 'RUNNING' then  -- sent again: started only if the lost call started it
    if last_entry_stamped(raw, 'b') then return 1 end
    return 0
  end
  STAMP = 'b'
  move(id, 'RUNNING', runner, raw)
  STAMP = false
  return 1
end

"""The Lua the queue sends: two of SAQ's own scripts, copied, and the moves' scripts.

The moves' scripts (`app.jobs.queue.moves`) do what SAQ's commands do to the job's keys, in
one call, and start with the same guard: KEYS[#KEYS] is the queue object's guard hash, ARGV[1]
the move's number and ARGV[2] the guard's ttl. A number at or below the guard's `seq` was
applied already (the move is sent again after a lost reply): it does nothing then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from app.jobs.pipeline import Command, Script

if TYPE_CHECKING:
    from redis.asyncio import Redis

# SAQ's own script (queue/redis.py): under a lock, every job id on the active list with its data.
TAKE_ACTIVE_JOBS = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""
# SAQ's enqueue script (queue/redis.py `_enqueue`): a job whose key is unfinished is refused.
ENQUEUE = Script(
    """
if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('SET', KEYS[2], ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
    if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
    return 1
else
    return nil
end
"""
)
GUARD_TTL_MS = 3_600_000  # how long a guard outlives its queue's last move: replays end sooner
# Every script below starts so. KEYS[#KEYS]: the guard. ARGV: the move's number, the guard's ttl.
_ONCE = """
local guard, seq = KEYS[#KEYS], tonumber(ARGV[1])
local replayed = tonumber(redis.call('HGET', guard, 'seq') or '0') >= seq
"""
_APPLIED = "redis.call('HSET', guard, 'seq', seq)\nredis.call('PEXPIRE', guard, ARGV[2])\n"
# KEYS: queued, active, and the queue's gate if it has one (`gate.py`). ARGV: how many.
# Each job moved: its id, then its data (or nil). A gate that is not `open` moves nothing and
# is answered instead: its value, or 'unknown' when it is absent. Read in the same script as
# the moves, so no job is taken after a pause was written.
TAKE = Script(
    _ONCE
    + """
local taken = {}
if replayed then
    if tonumber(redis.call('HGET', guard, 'take') or '0') == seq then
        for _, id in ipairs(cjson.decode(redis.call('HGET', guard, 'taken'))) do
            if redis.call('LPOS', KEYS[2], id) then
                taken[#taken + 1] = id
                taken[#taken + 1] = redis.call('GET', id)
            end
        end
    end
    return taken
end
if #KEYS == 4 then
    local gate = redis.call('GET', KEYS[3])
    if gate ~= 'open' then return gate or 'unknown' end
end
local ids = {}
for _ = 1, tonumber(ARGV[3]) do
    local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    if not id then break end
    ids[#ids + 1] = id
    taken[#taken + 1] = id
    taken[#taken + 1] = redis.call('GET', id)
end
if #ids > 0 then
    redis.call('HSET', guard, 'take', seq, 'taken', cjson.encode(ids))
"""
    + _APPLIED
    + """end
return taken
"""
)
# KEYS: queued, active. ARGV: the take whose jobs go back ('0': the ids that follow), ids.
# Jobs taken but handed to nobody go back to the head of the queue, in their order.
GIVE_BACK = Script(
    _ONCE
    + """
if replayed then return 0 end
"""
    + _APPLIED
    + """
local ids = {}
if ARGV[3] ~= '0' then
    if redis.call('HGET', guard, 'take') == ARGV[3] then
        ids = cjson.decode(redis.call('HGET', guard, 'taken'))
    end
else
    for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
end
for i = #ids, 1, -1 do
    if redis.call('LREM', KEYS[2], 1, ids[i]) == 1 then
        redis.call('LPUSH', KEYS[1], ids[i])
    end
end
return 1
"""
)
# SAQ's `_finish` transaction, then its notify. KEYS: active, incomplete, the job's id.
# ARGV: its ttl (> 0 expire, 0 keep, < 0 delete), its data, its status.
FINISH = Script(
    _ONCE
    + """
if replayed then return 0 end
"""
    + _APPLIED
    + """
redis.call('LREM', KEYS[1], 1, KEYS[3])
redis.call('ZREM', KEYS[2], KEYS[3])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
    redis.call('SETEX', KEYS[3], ARGV[3], ARGV[4])
elseif ttl == 0 then
    redis.call('SET', KEYS[3], ARGV[4])
else
    redis.call('DEL', KEYS[3])
end
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""
)
# SAQ's `_retry` transaction, then its notify. KEYS: active, queued, incomplete, the job's id.
# ARGV: its score in the incomplete set, '1' to queue it now, its data, its status.
RETRY = Script(
    _ONCE
    + """
if replayed then return 0 end
"""
    + _APPLIED
    + """
redis.call('LREM', KEYS[1], 1, KEYS[4])
redis.call('LREM', KEYS[2], 1, KEYS[4])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[4])
if ARGV[4] == '1' then redis.call('RPUSH', KEYS[2], KEYS[4]) end
redis.call('SET', KEYS[4], ARGV[5])
redis.call('PUBLISH', KEYS[4], ARGV[6])
return 1
"""
)


async def run_by_sha(redis: Redis, script: Script, calls: list[Command]) -> list[Any]:
    """`script`'s `calls` in one pipeline, by SHA: redis-py's registered scripts first ask
    Redis whether they exist, a second round trip every time. Only the calls Redis refused
    for a missing script (a restart, a SCRIPT FLUSH) are sent again once it is loaded: each
    of the others ran exactly once."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for i in todo:
                pipe.execute_command(*calls[i])
            answers = await pipe.execute(raise_on_error=False)
        for i, answer in zip(todo, answers, strict=True):
            replies[i] = answer
        todo = [i for i in todo if isinstance(replies[i], NoScriptError)]
        if not todo:
            break
        if attempt == 0:
            await redis.script_load(script.text)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies

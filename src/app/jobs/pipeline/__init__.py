"""A queue's Redis moves on one connection of their own, in the order they were staged.

A worker runs many jobs at once, and each talks to Redis at the same few moments (take, mark
active, heartbeat, finish, retry). Here they share one connection (`CommandBatcher`), one group
of commands on the wire at a time: what callers stage while a group is on the wire goes out as
the next one, one round trip for them all, and each caller awaits its own replies. A caller
who comes to a channel that has been quiet (`QUIET`) has its commands written at once, before
it yields, as a plain `await redis.set(...)` would be. A move staged after another reaches
Redis after it, under every fault; a caller cancelled before its commands were written has them
dropped.

When the connection drops before a group's replies came back, Redis may or may not have run
it. Work that `replays` (the moves make themselves safe to run twice) is written again first,
in its order, on a new connection; other work fails with the error. The channel reconnects at
once, then with a doubling backoff up to `RECONNECT_CAP`. A caller waits at most
`deliver_within` seconds (`DELIVER_WITHIN` unless told); then its work `expire`s: it tells its
caller and is either dropped or kept ("parked") until Redis takes it.

Scripts go by their SHA (`EVALSHA`) and are loaded on every new connection; a Redis that lost
its scripts without a reconnect (SCRIPT FLUSH) answers NOSCRIPT, which means the script did
not run: the work is built again and written next.
"""

from app.jobs.pipeline.channel import DELIVER_WITHIN, CommandBatcher
from app.jobs.pipeline.work import Command, RedisUnreachable, Script, Work

__all__ = ["DELIVER_WITHIN", "Command", "CommandBatcher", "RedisUnreachable", "Script", "Work"]

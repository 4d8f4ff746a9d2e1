"""`CommandBatcher`: the channel itself (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.jobs.pipeline.work import Call, Command, RedisUnreachable, Script, Work

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger(__name__)

DELIVER_WITHIN = 10.0  # seconds a caller waits for its commands to reach Redis, reconnects included
RECONNECT_FIRST, RECONNECT_CAP = 0.05, 5.0  # seconds between reconnect attempts, doubling
QUIET = 0.001  # seconds idle after which a caller's commands are written at once
LOST = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


@dataclass(eq=False)
class _Entry:
    work: Work | None  # None: the scripts loaded on a new connection
    due: float  # loop time after which the caller is told (inf: parked)
    commands: list[Command] | None = None  # once written
    noscript: int = 0
    staged: float = -math.inf  # loop time it was staged at


class CommandBatcher:
    """Writes what its callers stage on its own connection; one reader answers them."""

    def __init__(self, redis: Redis, *, deliver_within: float = DELIVER_WITHIN) -> None:
        pool = redis.connection_pool
        # Its own connection, never retried by redis-py: a retry is this channel's decision.
        self._connection = pool.connection_class(
            **{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        )
        self._callbacks = redis.response_callbacks
        self.deliver_within = deliver_within
        self._queue: deque[_Entry] = deque()  # staged, not written yet
        self._flight: deque[_Entry] = deque()  # written, replies not read yet
        self._fresh = True  # a new connection: load the scripts first
        self._busy = self._closed = False  # busy: the sending task has work in hand
        self._idle_since = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._backoff = self._next_attempt = 0.0
        self._attempted = -math.inf  # loop time of the last failed connect
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the one it is connected in

    async def execute(
        self, *commands: Command, replays: bool = False, patient: bool = True
    ) -> list[Any]:
        """Send `commands` (in this order, with other callers' around them); their replies.

        An error reply is raised. `replays`: safe to send again after a lost reply. `patient`:
        waits out an outage (up to `deliver_within`), else fails at the first failed reconnect.
        """
        call = Call(commands, replays=replays, patient=patient)
        self.stage(call)
        return await call.future

    def stage(self, work: Work) -> None:
        """Queue `work` after what is not written yet."""
        if self._closed:
            work.fail(RedisConnectionError("the Redis channel is closed"))
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._queue.append(_Entry(work, now + self.deliver_within, staged=now))
        self._idle.clear()
        if not self._busy and self._connection.is_connected:
            self._busy = True
            if loop.time() - self._idle_since >= QUIET:  # a lone caller: on the wire at once
                self._write()
        self._wake.set()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="redis-moves")

    async def connect(self) -> None:
        """Open the connection now rather than at the first move (Redis down: later); a
        closed channel opens again."""
        self._closed = False
        self.loop = asyncio.get_running_loop()
        if self._connection.is_connected:
            return
        with contextlib.suppress(Exception):
            await self._connection.connect()  # type: ignore[no-untyped-call]
            self._fresh = True

    async def idle(self) -> None:
        """Wait until everything staged so far has been sent and answered."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop; what is still undelivered fails (and says so)."""
        self._closed, self.loop = True, None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task, self._busy = None, False
        self._fail_all(RedisConnectionError("the Redis channel closed"), at_close=True)
        self._idle.set()
        with contextlib.suppress(Exception):
            await self._connection.disconnect(nowait=True)

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                if self._flight:
                    await self._read()
                    await asyncio.sleep(0)  # answered callers stage their next moves first
                elif self._queue and self._connection.is_connected:
                    self._write()
                elif self._queue:
                    await self._reconnect()
                else:
                    self._busy, self._idle_since = False, asyncio.get_running_loop().time()
                    self._idle.set()
                    await self._wake.wait()
                    self._busy = True
        except Exception:  # a bug here must not leave callers waiting for ever
            log.exception("the Redis channel stopped")
            self._fail_all(RedisConnectionError("the Redis channel stopped"))
            self._task = None
            await self._drop_connection()

    def _fail_all(self, error: BaseException, *, at_close: bool = False) -> None:
        works = [entry.work for entry in [*self._flight, *self._queue] if entry.work is not None]
        self._flight, self._queue = deque(), deque()
        if works and at_close:
            log.error("redis moves not delivered at shutdown", count=len(works))
        for work in works:
            work.fail(error)
        self._idle.set()

    def _write(self) -> None:
        written: list[_Entry] = []
        while self._queue:
            entry = self._queue.popleft()
            if entry.commands is None and entry.work is not None:
                entry.commands = entry.work.commands()
            if entry.commands:  # none: its caller is gone, nothing was sent
                written.append(entry)
        if not written:
            return
        if self._fresh:  # a new connection: the scripts first
            loads = [("SCRIPT", "LOAD", script.text) for script in Script.every()]
            written.insert(0, _Entry(None, math.inf, loads))
            self._fresh = False
        self._flight.extend(written)
        commands = [command for entry in written for command in entry.commands or ()]
        writer = self._connection._writer
        if writer is not None:  # else the read that follows finds the connection gone
            with contextlib.suppress(Exception):
                writer.writelines(self._connection.pack_commands(commands))
        self._wake.set()

    async def _read(self) -> None:
        count = sum(len(entry.commands or ()) for entry in self._flight)
        try:
            async with asyncio.timeout(self.deliver_within):
                replies = [await self._reply() for _ in range(count)]
        except LOST as error:
            await self._lost(error)
            return
        group, self._flight = self._flight, deque()
        again, start = [], 0
        for entry in group:
            end = start + len(entry.commands or ())
            if entry.work is not None and not self._deliver(entry, replies[start:end]):
                again.append(entry)
            start = end
        self._queue.extendleft(reversed(again))

    async def _reply(self) -> Any:
        try:
            return await self._connection.read_response()
        except ResponseError as error:  # an error reply is its caller's, not the connection's
            return error

    def _deliver(self, entry: _Entry, replies: list[Any]) -> bool:
        """Hand `entry` its replies; False: a script it sent was unknown, it goes again."""
        assert entry.work is not None
        commands = entry.commands or []
        if any(isinstance(reply, NoScriptError) for reply in replies) and entry.noscript < 2:
            entry.commands, entry.noscript = None, entry.noscript + 1  # it did not run
            self._fresh = True
            return False
        parsed = [self._parsed(c, r) for c, r in zip(commands, replies, strict=True)]
        try:
            entry.work.resolve(parsed)
        except Exception as error:  # one caller's bad reply must not strand the others
            entry.work.fail(error)
        return True

    def _parsed(self, command: Command, reply: Any) -> Any:
        callback = self._callbacks.get(str(command[0]))
        return reply if callback is None or isinstance(reply, Exception) else callback(reply)

    async def _lost(self, error: BaseException) -> None:
        await self._drop_connection()
        lost, self._flight = [entry for entry in self._flight if entry.work is not None], deque()
        kept = [entry for entry in lost if entry.work is not None and entry.work.replays]
        for entry in lost:
            if entry.work is not None and not entry.work.replays:
                entry.work.fail(error)
        self._queue.extendleft(reversed(kept))
        self._next_attempt, self._error = 0.0, error  # try at once: often only this one was lost
        if kept:
            log.warning("redis connection lost: moves resent", count=len(kept), error=str(error))

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._next_attempt - loop.time()
        # An impatient caller (a read) gets an attempt of its own, as on SAQ's pool: it fails
        # at once while Redis is down, and does not wait out the patient moves' backoff.
        if wait > 0 and not self._impatient_since(self._attempted):
            due = min(entry.due for entry in self._queue)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(wait, due - loop.time()))):
                    await self._wake.wait()  # a new caller
            self._expire(loop.time(), impatient=False)
            return
        try:
            await self._connection.connect()  # type: ignore[no-untyped-call]
        except Exception as error:
            self._error, self._attempted = error, loop.time()
            if wait <= 0:
                self._backoff = min(max(self._backoff * 2, RECONNECT_FIRST), RECONNECT_CAP)
                self._next_attempt = loop.time() + self._backoff
            self._expire(loop.time(), impatient=True)
            return
        self._backoff, self._fresh = 0.0, True

    def _impatient_since(self, moment: float) -> bool:
        return any(
            entry.work is not None and not entry.work.patient and entry.staged > moment
            for entry in self._queue
        )

    def _expire(self, now: float, *, impatient: bool) -> None:
        late = RedisUnreachable(f"Redis not reached in {self.deliver_within:g} s: {self._error}")
        kept: deque[_Entry] = deque()
        for entry in self._queue:
            if entry.work is None:
                continue
            if entry.due <= now:
                error = late
            elif impatient and not entry.work.patient:
                error = RedisUnreachable(f"Redis unreachable: {self._error}")
            else:
                kept.append(entry)
                continue
            replacement = entry.work.expire(error)
            if replacement is entry.work:
                entry.due = math.inf
                kept.append(entry)
            elif replacement is not None:
                kept.append(_Entry(replacement, math.inf))
        self._queue = kept

    async def _drop_connection(self) -> None:
        with contextlib.suppress(Exception):
            await self._connection.disconnect(nowait=True)
        self._fresh = True

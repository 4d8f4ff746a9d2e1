"""Redis commands of concurrent callers sent together: one pipeline per round trip.

A worker runs many jobs at once, and each of them talks to Redis at the same few moments
(take, mark active, finish). Sent one by one, every command pays a round trip and redis-py's
per-call work; staged here, the commands every caller staged while the previous pipeline was
on the wire go out as the next one. Each caller still awaits its own replies, so nothing
returns before Redis has taken it.

Scripts go by their SHA (`EVALSHA`): a Redis that lost its script cache (a restart) answers
NOSCRIPT, which means the script did not run; it is loaded and sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis

Command = tuple[Any, ...]


class Script:
    """A Lua script sent by its SHA; `call` makes its command for a pipeline."""

    _known: ClassVar[dict[str, Script]] = {}  # by SHA: what to load when Redis answers NOSCRIPT

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        Script._known[self.sha] = self

    def call(self, keys: Sequence[Any], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    @classmethod
    def of(cls, command: Command) -> Script | None:
        return cls._known.get(command[1]) if command[0] == "EVALSHA" else None


class Staged(Protocol):
    """Work staged for the next pipeline: its commands are asked for when it is built."""

    def commands(self) -> list[Command]: ...

    def resolve(self, replies: list[Any]) -> None: ...

    def fail(self, error: BaseException) -> None: ...


class _Call:
    """Commands a caller awaits the replies of."""

    def __init__(self, commands: Sequence[Command]) -> None:
        self._commands = list(commands)
        self.future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def commands(self) -> list[Command]:
        return self._commands

    def resolve(self, replies: list[Any]) -> None:
        if self.future.done():  # the caller was cancelled: Redis ran it all the same
            return
        error = next((r for r in replies if isinstance(r, Exception)), None)
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(replies)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class CommandBatcher:
    """Sends what its callers staged, one pipeline (no MULTI) at a time."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._staged: list[Staged] = []
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def execute(self, *commands: Command) -> list[Any]:
        """Send `commands` (in this order, with other callers' around them); their replies.

        An error reply is raised. A cancelled caller's commands are sent all the same.
        """
        call = _Call(commands)
        self.stage(call)
        return await call.future

    def stage(self, work: Staged) -> None:
        self._staged.append(work)
        if self._task is None:
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-batch")

    async def idle(self) -> None:
        """Wait until everything staged so far has been sent and answered."""
        await self._idle.wait()

    async def _run(self) -> None:
        try:
            while self._staged:
                staged, self._staged = self._staged, []
                await self._send(staged)
                await asyncio.sleep(0)  # callers just answered stage their next commands first
        finally:
            self._task = None
            for work in self._staged:  # only when cancelled: nothing will send them
                work.fail(ConnectionError("the Redis batcher stopped"))
            self._staged = []
            self._idle.set()

    async def _send(self, staged: list[Staged]) -> None:
        try:
            per_work = [work.commands() for work in staged]
            commands = [command for work_commands in per_work for command in work_commands]
            replies = await self._pipeline(commands)
            unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if unknown:  # nothing ran for these: load their scripts and send them again
                await self._load({Script.of(commands[i]) for i in unknown})
                again = await self._pipeline([commands[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except BaseException as error:
            for work in staged:
                work.fail(error)
            if not isinstance(error, Exception):
                raise
            return
        start = 0
        for work, work_commands in zip(staged, per_work, strict=True):
            end = start + len(work_commands)
            try:
                work.resolve(replies[start:end])
            except Exception as error:  # one caller's bad reply must not strand the others
                work.fail(error)
            start = end

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        if not commands:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)

    async def _load(self, scripts: set[Script | None]) -> None:
        for script in scripts:
            if script is not None:
                await self._redis.script_load(script.text)

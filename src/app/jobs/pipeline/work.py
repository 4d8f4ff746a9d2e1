"""What a caller stages on the channel: commands, the work that carries them, its scripts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError

Command = tuple[Any, ...]


class RedisUnreachable(RedisConnectionError):
    """Commands that did not reach Redis within the channel's bound."""


class Script:
    """A Lua script sent by its SHA; `call` makes its command."""

    _known: ClassVar[dict[str, Script]] = {}  # by SHA: what a new connection loads

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        Script._known[self.sha] = self

    def call(self, keys: Sequence[Any], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    @classmethod
    def every(cls) -> list[Script]:
        return list(cls._known.values())


class Work(Protocol):
    """What a caller staged.

    `commands` is asked for when the work is first written ([]: its caller is gone, nothing is
    sent) and again only after a NOSCRIPT; after a lost reply the same commands are sent again.
    `expire` says what stays queued once the caller was told (itself, another work, or None).
    """

    replays: bool  # safe to send again when Redis may have run it already
    patient: bool  # waits for a reconnect; else fails at the first failed attempt

    def commands(self) -> list[Command]: ...

    def resolve(self, replies: list[Any]) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def expire(self, error: BaseException) -> Work | None: ...


class Call:
    """Commands a caller awaits the replies of."""

    def __init__(self, commands: Sequence[Command], *, replays: bool, patient: bool) -> None:
        self._commands = list(commands)
        self.replays, self.patient = replays, patient
        self.future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def commands(self) -> list[Command]:
        return [] if self.future.done() else self._commands

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

    def expire(self, error: BaseException) -> Work | None:
        self.fail(error)
        return None

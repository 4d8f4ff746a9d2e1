"""What the queue stands on, checked once when it connects: the SAQ its Redis moves were
verified with, and a Redis that can run them.

The moves copy SAQ's key layout and two of its scripts and read its private attributes, so
they are verified against one SAQ release (`SAQ_VERIFIED`; docs/saq-compatibility.md says how
to move to another). Under them Redis must be 6.2 or later (LMOVE in the take, LPOS in abort
and in a replayed take), have every command they send (a `rename-command` can take one
away), let a script read keys it does not declare (the take GETs the jobs it moves; Dragonfly
refuses by default) and not be a Cluster (a queue's keys span hash slots).
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from saq.queue.redis import RedisQueue

log = structlog.get_logger(__name__)

SAQ_VERIFIED = "0.26.4"
REDIS_FLOOR = (6, 2, 0)
# What the queue sends, SAQ's own calls included; the first one missing is named.
COMMANDS = (
    "lmove", "blmove", "lpos", "lrem", "lpush", "rpush", "lrange", "llen", "get", "set", "setex",
    "mget", "del", "exists", "zadd", "zrem", "zscore", "zrangebyscore", "zcard", "hget", "hset",
    "pexpire", "publish", "psubscribe", "evalsha", "script", "multi", "exec", "info",
)  # fmt: skip
_UNDECLARED_KEY_PROBE = "return redis.call('EXISTS', ARGV[1])"


class FloorError(RuntimeError):
    """What the queue needs is not there: one line naming it."""


def saq_problem(installed: str) -> str | None:
    if installed == SAQ_VERIFIED:
        return None
    return (
        f"SAQ {installed} is installed: this project's Redis moves were verified with SAQ "
        f"{SAQ_VERIFIED} (docs/saq-compatibility.md says how to upgrade)"
    )


def check_saq() -> None:
    problem = saq_problem(importlib.metadata.version("saq"))
    if problem is not None:
        raise FloorError(problem)


def redis_problems(
    version: tuple[int, ...], missing: list[str], undeclared_keys: bool, cluster: bool
) -> list[str]:
    """What this Redis lacks, each said as what the queue needs."""
    problems = []
    if version < REDIS_FLOOR:
        problems.append("6.2 or later (LMOVE)")
    if missing:
        problems.append(f"the commands {', '.join(name.upper() for name in missing)}")
    if not undeclared_keys:
        problems.append("scripts that may read keys they do not declare")
    if cluster:
        problems.append("a single Redis, not a Cluster")
    return problems


def floor_line(where: str, version: tuple[int, ...], problems: list[str]) -> str:
    shown = ".".join(map(str, version))
    return f"Redis {shown} at {where}: this process needs {'; '.join(problems)}"


def where(redis: Redis) -> str:
    """The server, said without its password."""
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


async def check_redis(redis: Redis, probe_key: str) -> tuple[int, ...]:
    """Raise `FloorError` when this Redis cannot run the queue's moves; its version."""
    raw = Redis(connection_pool=redis.connection_pool)  # its replies unparsed: a nil is kept
    raw.set_response_callback("COMMAND", lambda response, **_: response)
    async with raw.pipeline(transaction=False) as pipe:
        pipe.info()
        pipe.execute_command("COMMAND", "INFO", *COMMANDS)
        pipe.eval(_UNDECLARED_KEY_PROBE, 0, probe_key)
        info, commands, probe = await pipe.execute(raise_on_error=False)
    if isinstance(info, Exception):
        raise info
    version = tuple(int(part) for part in str(info["redis_version"]).split("."))
    known = commands if isinstance(commands, list) else []
    missing = [name for name, found in zip(COMMANDS, known, strict=False) if not found]
    cluster = _flag(info.get("cluster_enabled"))
    problems = redis_problems(version, missing, not isinstance(probe, Exception), cluster)
    if problems:
        raise FloorError(floor_line(where(redis), version, problems))
    return version


def _flag(value: Any) -> bool:
    return str(value) == "1"


class Floor:
    """The checks of one queue: made once (Redis unreachable: at the next call), a refusal
    logged once and raised at every call."""

    def __init__(self, queue: RedisQueue) -> None:
        self._queue = queue
        self._refused: FloorError | None = None
        self._checked = False

    async def check(self) -> None:
        if self._refused is not None:
            raise self._refused
        if self._checked:
            return
        try:
            check_saq()
            version = await check_redis(self._queue.redis, self._queue.namespace("floor-probe"))
        except FloorError as error:
            structlog.get_logger(__name__).error(str(error))  # per call: rare, and tests see it
            self._refused = error
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            log.warning("redis floor not checked yet: unreachable", error=str(error))
            return
        self._queue._version = version  # SAQ's `version()` asks no more
        self._checked = True

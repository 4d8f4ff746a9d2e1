"""What one side of a differential run left in its Redis: every key, and every PUBLISH.

Both are normalised as the comparison needs, and only that: the times SAQ stamps on a job
(`queued`, `started`, `completed`, `touched`) and a worker's uptime become `TIME`, and a score
or TTL that depends on when it was written compares within `TOLERANCE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

TIME = "<time>"
JOB_TIMES = ("queued", "started", "completed", "touched")
TOLERANCE = 3.0  # seconds: two runs of a scenario write the same value this far apart, at most
_EPOCH_S = 1e9  # a score above this is a time: epoch seconds (SAQ's `scheduled`, a retry's due)
_EPOCH_MS = 1e12  # ... or epoch milliseconds (worker stats)
END = "saq:differential:end"  # published last: every earlier PUBLISH has been received


@dataclass(frozen=True)
class Near:
    """A number that depends on when it was written (a TTL, a time score), within TOLERANCE."""

    seconds: float

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Near) and abs(self.seconds - other.seconds) <= TOLERANCE

    def __hash__(self) -> int:
        return 0


@dataclass(frozen=True)
class Key:
    """One key: its type, its TTL (None: none) and its value, normalised."""

    type: str
    ttl: Near | None
    value: Any


@dataclass
class Snapshot:
    """One side's Redis at the end of a scenario, and what the scenario observed."""

    keys: dict[str, Key]
    channels: dict[str, list[str]]  # channel -> every message published on it, in order
    observed: dict[str, Any] = field(default_factory=dict)


def score(value: float, t0: float) -> float | Near:
    """A zset score; a time one as its distance from the scenario's start."""
    if value > _EPOCH_MS:
        return Near(value / 1000 - t0)
    if value > _EPOCH_S:
        return Near(value - t0)
    return value


def normalise_job(record: dict[str, Any]) -> dict[str, Any]:
    return {name: TIME if name in JOB_TIMES and value else value for name, value in record.items()}


def _string(key: str, raw: bytes) -> Any:
    if key.startswith("saq:job:"):
        return normalise_job(json.loads(raw))
    if ":worker_info:" in key:
        info = json.loads(raw)
        info["stats"]["uptime"] = TIME
        return info
    return raw.decode()


async def snapshot_keys(redis: Redis, t0: float) -> dict[str, Key]:
    keys: dict[str, Key] = {}
    async for raw_name in redis.scan_iter(count=1000):
        name = raw_name.decode()
        kind = (await redis.type(name)).decode()
        value: Any
        if kind == "string":
            value = _string(name, await redis.get(name))
        elif kind == "list":
            value = [item.decode() for item in await redis.lrange(name, 0, -1)]
        elif kind == "zset":
            pairs = await redis.zrange(name, 0, -1, withscores=True)
            value = {member.decode(): score(points, t0) for member, points in pairs}
        elif kind == "hash":
            value = {k.decode(): v.decode() for k, v in (await redis.hgetall(name)).items()}
        elif kind == "set":
            value = sorted(member.decode() for member in await redis.smembers(name))
        else:  # a stream: the project's events, compared by their count only
            value = await redis.xlen(name)
        pttl = await redis.pttl(name)
        keys[name] = Key(kind, Near(pttl / 1000) if pttl >= 0 else None, value)
    return keys


class Publishes:
    """Every message published on `saq:*` while it listens (PSUBSCRIBE before the scenario)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._messages: list[tuple[str, str]] = []
        self._ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.psubscribe("saq:*")
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()
            if channel == END:
                self._ended.set()
                return
            self._messages.append((channel, message["data"].decode()))

    async def stop(self) -> dict[str, list[str]]:
        """Every message so far, by channel: all published before this call are in."""
        await self._redis.publish(END, "end")
        await asyncio.wait_for(self._ended.wait(), 10)
        assert self._task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._pubsub.aclose()
        channels: dict[str, list[str]] = defaultdict(list)
        for channel, data in self._messages:
            channels[channel].append(data)
        return dict(channels)

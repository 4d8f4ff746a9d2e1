"""One scenario, run twice: against SAQ's `RedisQueue` and against the project's `TrackedQueue`.

Each side has a Redis server of its own, emptied first. A subscriber on `saq:*` hears every
PUBLISH from before the scenario starts; once it has run and its queue is closed, both
keyspaces are read and compared (`compare.py`) with the allowances the scenario declares,
plus the ones that hold everywhere (`allowed.ALWAYS`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import litestar_saq.config
from litestar.serialization import decode_json
from redis.asyncio import Redis
from redis.asyncio import from_url as redis_from_url
from saq.job import Job
from saq.queue.redis import RedisQueue

from app.asgi import build_parts
from app.config import Settings
from app.worker.settings import REGISTRY
from tests.differential.allowed import ALWAYS
from tests.differential.compare import Allowance, Comparison, compare
from tests.differential.keyspace import Publishes, Snapshot, normalise_job, snapshot_keys


@dataclass
class Run:
    """What a scenario is given on each side."""

    queue: RedisQueue
    redis: Redis  # a client of its own, for what no queue method does (a job's data lost)
    at: int  # a due time shared by both sides: an hour after the test started, epoch seconds
    observed: dict[str, Any] = field(default_factory=dict)

    def observe(self, label: str, value: Any) -> None:
        """Keep `value` for the comparison (a Job as its record, normalised like Redis's)."""
        self.observed[label] = _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Job):
        return normalise_job(decode_json(litestar_saq.config.serializer(value.to_dict())))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()
    return value


Scenario = Callable[[Run], Awaitable[None]]


class Differ:
    """Runs scenarios on both sides; `settings` name the queue and the database."""

    def __init__(self, settings: Settings, saq_url: str, tracked_url: str) -> None:
        self.settings = settings
        self.saq_url, self.tracked_url = saq_url, tracked_url
        self.at = int(time.time()) + 3600

    async def _side(self, url: str, scenario: Scenario, tracked: bool) -> Snapshot:
        redis = redis_from_url(url)
        await redis.flushall()
        publishes = Publishes(redis)
        await publishes.start()
        if tracked:
            parts = build_parts(replace(self.settings, redis_url=url), REGISTRY)
            queue: RedisQueue = parts.queue
            close: Callable[[], Awaitable[None]] = parts.close
        else:
            queue = RedisQueue(
                redis_from_url(url, socket_connect_timeout=2),
                name=self.settings.queue_name,
                dump=litestar_saq.config.serializer,
                load=decode_json,
            )
            close = queue.disconnect
        await queue.connect()
        t0 = time.time()
        run = Run(queue, redis, self.at)
        try:
            await scenario(run)
        finally:
            await close()
        channels = await publishes.stop()
        snapshot = Snapshot(await snapshot_keys(redis, t0), channels, run.observed)
        await redis.aclose()
        return snapshot

    async def compare(self, scenario: Scenario, allowed: list[Allowance]) -> Comparison:
        saq = await self._side(self.saq_url, scenario, tracked=False)
        tracked = await self._side(self.tracked_url, scenario, tracked=True)
        return compare(self.settings.queue_name, saq, tracked, [*ALWAYS, *allowed])

    async def check(self, scenario: Scenario, allowed: tuple[Allowance, ...] = ()) -> None:
        """Fails unless Redis ends the same on both sides but for the allowed differences,
        and each allowance declared was needed (the difference it explains did occur)."""
        result = await self.compare(scenario, list(allowed))
        assert not result.differences, "TrackedQueue differs from SAQ's RedisQueue:\n" + "\n".join(
            result.differences
        )
        declared = {allowance.name for allowance in allowed}
        assert declared <= result.used, f"allowed but not seen: {declared - result.used}"

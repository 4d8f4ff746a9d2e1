"""The queue refuses at connect, in one line, a Redis its moves cannot run on; a take that
Redis refuses is backed off like a lost connection. Real Redis servers, set up to lack what
the moves need.

Catches: the floor check removed (a worker would start on a Redis without LMOVE, or on a
Cluster, and fail every take), a refusal said over several lines or not naming what is
missing, and a take refused by Redis tried again at once (SAQ's worker spins a core).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import from_url
from saq.job import Job
from saq.worker import Worker
from structlog.testing import capture_logs

from app.asgi import build_parts
from app.config import Settings
from app.jobs.queue.floor import FloorError
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import REGISTRY
from tests.support import LocalRedis, free_port

REFUSED_FOR = 3.0  # seconds a worker meets a Redis that refuses every take


@pytest.fixture
def redis_with(tmp_path: Path) -> Iterator[Callable[..., LocalRedis]]:
    """Start a Redis of our own with more of redis-server's arguments."""
    started: list[LocalRedis] = []

    def start(*options: str) -> LocalRedis:
        server = LocalRedis(tmp_path / f"redis-{len(started)}", free_port(), False, options=options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def refusal(settings: Settings, redis: LocalRedis) -> str:
    """The line a queue on `redis` refuses it with, checked to be logged once, as an error."""
    parts = build_parts(replace(settings, redis_url=redis.url), REGISTRY)
    try:
        with capture_logs() as logs, pytest.raises(FloorError) as refused:
            await parts.queue.connect()
    finally:
        await parts.close()
    line = str(refused.value)
    assert "\n" not in line
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [line]
    return line


async def version_of(redis: LocalRedis) -> str:
    client = from_url(redis.url)
    try:
        return str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()


async def test_a_redis_without_a_command_the_moves_send_is_refused_in_one_line(
    settings: Settings, redis_with: Callable[..., LocalRedis]
) -> None:
    redis = redis_with("--rename-command", "LMOVE", "")
    line = await refusal(settings, redis)
    where = f"redis://127.0.0.1:{redis.port}/0"
    assert (
        line == f"Redis {await version_of(redis)} at {where}: this process needs the commands LMOVE"
    )


async def test_a_redis_cluster_is_refused_in_one_line(
    settings: Settings,
    redis_with: Callable[..., LocalRedis],
    tmp_path: Path,
) -> None:
    nodes = tmp_path / "nodes.conf"
    redis = redis_with(
        "--cluster-enabled", "yes", "--cluster-config-file", str(nodes),
        "--cluster-port", str(free_port()),  # else its port + 10000, past 65535 for some
    )  # fmt: skip
    line = await refusal(settings, redis)
    assert line.endswith(
        "this process needs scripts that may read keys they do not declare; "
        "a single Redis, not a Cluster"
    )


async def test_a_redis_that_has_what_the_moves_need_is_taken(queue: TrackedQueue) -> None:
    assert queue._floor._checked  # the session's Redis: connected without a refusal


async def noop(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0)


async def test_a_take_redis_refuses_is_backed_off_not_tried_again_at_once(
    queue: TrackedQueue,
) -> None:
    """The queued list is not a list: Redis refuses every take (WRONGTYPE), as a full Redis
    (OOM) or a read-only replica would. Counted by Redis itself: the take script's failed
    calls."""
    await queue.enqueue(Job("noop"))
    await queue.redis.delete(queue.namespace("queued"))
    await queue.redis.set(queue.namespace("queued"), "not a list")
    before = await failed_scripts(queue)
    worker = Worker(queue, [noop], concurrency=1)
    running = asyncio.create_task(worker.start())
    await asyncio.sleep(REFUSED_FOR)
    await worker.stop()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    attempts = await failed_scripts(queue) - before
    bound = attempts_within(REFUSED_FOR) + 2
    assert 1 <= attempts <= bound, f"{attempts} takes in {REFUSED_FOR} s (at most {bound})"


async def failed_scripts(queue: TrackedQueue) -> int:
    stats = await queue.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("failed_calls", 0))


def attempts_within(seconds: float, first: float = 0.1, cap: float = 5.0) -> int:
    """How many takes one worker loop tries in `seconds` when each failure doubles its wait."""
    attempts, waited, wait = 1, 0.0, first
    while waited < seconds:
        waited, attempts, wait = waited + wait, attempts + 1, min(wait * 2, cap)
    return attempts

"""Fixtures: in-process pieces on the real servers (the app under a test client, a SAQ worker,
the service); the helpers they use live in tests/support."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from litestar_saq import SAQPlugin
from saq.worker import Worker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import Parts, build_parts, create_app
from app.config import Settings
from app.db.connection import HeldConnection
from app.db.models import BackgroundJob
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.registry import TaskRegistry
from app.worker.settings import REGISTRY, saq_config
from tests.support import StartWorker, WaitForRow
from tests.support import wait_for_row as support_wait_for_row


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def parts(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Parts]:
    """What a process of the app builds (its own engine, queue, enqueuer), as the test's."""
    parts = build_parts(settings, REGISTRY)
    yield parts
    await parts.close()


@pytest.fixture
async def queue(parts: Parts) -> TrackedQueue:
    await parts.queue.connect()
    return parts.queue


@pytest.fixture
async def make_enqueuer(
    queue: TrackedQueue, engine: AsyncEngine
) -> AsyncIterator[Callable[..., Enqueuer]]:
    """An enqueuer (the one outbox path) for other tasks than the worker's, or another queue."""
    made: list[Enqueuer] = []

    def make(registry: TaskRegistry = REGISTRY, on: TrackedQueue = queue) -> Enqueuer:
        made.append(Enqueuer(on, registry, 60, HeldConnection(lambda: engine)))
        return made[-1]

    yield make
    for enqueuer in made:
        await enqueuer.close()


@pytest.fixture
async def start_worker(settings: Settings) -> AsyncIterator[StartWorker]:
    """Start the project's tracked SAQ worker in this event loop (stopped after the test)."""
    running: list[tuple[Worker, asyncio.Task[None], Parts]] = []

    async def start(registry: TaskRegistry = REGISTRY, **overrides: Any) -> Worker:
        parts = build_parts(settings, registry)  # a worker process's own, as create_app builds
        config = saq_config(settings, registry, parts.queue, parts.reconciler, parts.database)
        for name, value in overrides.items():
            setattr(config.queue_configs[0], name, value)
        worker: Worker = SAQPlugin(config).get_workers()[settings.queue_name]
        await worker.queue.connect()
        running.append((worker, asyncio.create_task(worker.start()), parts))
        return worker

    yield start
    for worker, task, parts in running:
        await worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await parts.close()


@pytest.fixture
def jobs(session: AsyncSession, queue: TrackedQueue, parts: Parts) -> BackgroundJobService:
    return BackgroundJobService(session, enqueuer=parts.enqueuer)


@pytest.fixture
def wait_for_row(engine: AsyncEngine) -> WaitForRow:
    """Wait until the row of `job_id` satisfies `check` (read fresh from the database)."""

    async def wait(
        job_id: Any, check: Callable[[BackgroundJob], bool], what: str = "row"
    ) -> BackgroundJob:
        return await support_wait_for_row(engine, job_id, check, what=what)

    return wait

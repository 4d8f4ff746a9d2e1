"""In-process pieces on the real servers: the app under a test client, a SAQ worker, the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from litestar_saq import SAQConfig, SAQPlugin
from saq.queue import Queue
from saq.worker import Worker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import create_app
from app.config import Settings, saq_config, tracked_queue
from app.db.models import BackgroundJob
from app.jobs.registry import TaskRegistry
from app.jobs.services import BackgroundJobService, Enqueuer
from app.worker.settings import REGISTRY, queue_config
from tests.support import eventually

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[Queue]:
    queue = saq_config(settings).get_queues().get(settings.queue_name)
    await queue.connect()
    yield queue
    await queue.disconnect()


@pytest.fixture
async def start_worker(settings: Settings) -> AsyncIterator[StartWorker]:
    """Start the project's tracked SAQ worker in this event loop (stopped after the test)."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(registry: TaskRegistry = REGISTRY, **overrides: Any) -> Worker:
        config = queue_config(settings, registry)
        for name, value in overrides.items():
            setattr(config, name, value)
        plugin = SAQPlugin(
            SAQConfig(
                queue_configs=[config],
                queue_instances={settings.queue_name: tracked_queue(settings)},
            )
        )
        worker: Worker = plugin.get_workers()[settings.queue_name]
        await worker.queue.connect()
        running.append((worker, asyncio.create_task(worker.start())))
        return worker

    yield start
    for worker, task in running:
        await worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.queue.disconnect()


@pytest.fixture
def jobs(session: AsyncSession, queue: Queue, settings: Settings) -> BackgroundJobService:
    return BackgroundJobService(
        session, enqueuer=Enqueuer(queue, REGISTRY, default_timeout=settings.job_timeout)
    )


@pytest.fixture
def wait_for_row(
    session: AsyncSession,
) -> Callable[..., Awaitable[BackgroundJob]]:
    """Wait until the row of `job_id` satisfies `check` (read fresh from the database)."""

    async def wait(
        job_id: Any, check: Callable[[BackgroundJob], bool], what: str = "row"
    ) -> BackgroundJob:
        async def probe() -> BackgroundJob | None:
            session.expire_all()
            row = await BackgroundJobService(session).get_by_job_id(job_id)
            await session.commit()
            return row if row is not None and check(row) else None

        return await eventually(probe, what=what)

    return wait

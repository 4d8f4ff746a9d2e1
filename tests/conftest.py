"""Session fixtures: real PostgreSQL and Redis, migrated with the real Alembic migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings
from tests.support import (
    Servers,
    create_database,
    drop_database,
    make_settings,
    migrate,
    start_servers,
)
from tests.support.partitions import partition_history


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with start_servers() as running:
        yield running


HISTORY = timedelta(days=60)  # the session database's partitions reach this far back


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    """A fresh database for this test session, migrated to head, with a partition a day
    for the last HISTORY (as a table the workers have kept for a while)."""
    name = create_database(servers)
    url = servers.database_url(name)
    migrate(url)

    async def partition() -> None:
        engine = create_async_engine(Settings.from_env({"DATABASE_URL": url}).database_url)
        await partition_history(engine, HISTORY)
        await engine.dispose()

    asyncio.run(partition())
    yield url
    drop_database(servers, name)


@pytest.fixture
def settings(database_url: str, servers: Servers) -> Settings:
    """Settings for one test: its own queue name, so tests never see each other's jobs."""
    return make_settings(database_url, servers.redis_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "TRUNCATE background_jobs, job_idempotency_keys, job_dependencies, job_stats,"
                " job_stats_pending"
            )
        )
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield session

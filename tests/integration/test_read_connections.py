"""The API's pool hands out only live connections, without a round trip to check them
(`app.db.connection.create_engine`, in place of SQLAlchemy's `pool_pre_ping`)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.connection import create_engine
from tests.support import eventually

TRIGGER = "/api/v1/tasks/trigger-test"
# The API's reads of a job and of the list; the test's own connections never send them.
APP_READS = "SELECT background_jobs.id, background_jobs.job_id%"


async def test_reads_after_the_server_ended_the_pools_connections(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    """PostgreSQL ends every connection the API's reads had (a restart, an admin's
    `pg_terminate_backend`); the next reads answer 200 on new ones.

    Catches: the check at checkout removed with nothing in its place (the pool hands out the
    closed connection and the read answers 503).
    """
    job_id = (await client.post(TRIGGER, json={"message": "read me"})).json()["job_id"]
    for _ in range(3):  # the pool now holds connections that ran the reads
        assert (await client.get(f"/api/v1/jobs/{job_id}")).status_code == 200
        assert (await client.get("/api/v1/jobs", params={"limit": 1})).status_code == 200
    async with engine.connect() as connection:
        ended = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query LIKE :reads"
            ),
            {"reads": APP_READS},
        )
        assert ended, "the API's reads left no connection to end"

    async def gone() -> bool:
        async with engine.connect() as probe:  # a transaction sees one snapshot of the view
            left = await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND query LIKE :reads"
                ),
                {"reads": APP_READS},
            )
        return bool(left == 0)

    await eventually(gone, what="the API's read connections ended")
    for _ in range(3):
        got = await client.get(f"/api/v1/jobs/{job_id}")
        assert got.status_code == 200, got.text
        listed = await client.get("/api/v1/jobs", params={"limit": 1})
        assert listed.status_code == 200, listed.text


def _psql(database_url: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", database_url, "-Atc", sql], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


async def test_a_connection_ended_before_the_loop_read_its_end_is_not_handed_out(
    settings: Settings, database_url: str
) -> None:
    """The server ends an idle pooled connection and the event loop has not read its goodbye
    yet (asyncpg then neither says it is closed nor can run a query on it); the next checkout
    hands out a live connection.

    Catches: a check at checkout that trusts asyncpg's `is_closed()` alone (the read answered
    500, `another operation is in progress`: seen in a whole-suite run).
    """
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        # No await from here to the checkout: the loop cannot read what the server sent.
        _psql(database_url, f"SELECT pg_terminate_backend({pid})")
        gone = f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {int(pid)}"  # noqa: S608
        for _ in range(200):  # the bound only stops a broken test
            if _psql(database_url, gone) == "t":
                break
            time.sleep(0.05)  # noqa: ASYNC251 - holding the loop is the point
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        await engine.dispose()

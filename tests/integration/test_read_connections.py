"""The API's pool hands out only live connections, without a round trip to check them
(`app.db.connection.create_engine`, in place of SQLAlchemy's `pool_pre_ping`)."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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

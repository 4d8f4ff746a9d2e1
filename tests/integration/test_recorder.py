"""LifecycleRecorder and its held connection on real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Executable, Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.connection import HeldConnection
from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.reads.service import BackgroundJobService
from app.jobs.record.recorder import LifecycleRecorder
from app.worker.tasks import trigger_test


class CountedConnection(HeldConnection):
    """The real connection, counting its writes and the transitions each carried."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(lambda: engine)
        self.writes: list[int] = []

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        self.writes.append(len(parameters["job_ids"]))
        return await super().execute(statement, parameters)


async def test_under_load_batches_grow_instead_of_writes(
    engine: AsyncEngine, jobs: BackgroundJobService
) -> None:
    rows = [await jobs.enqueue(trigger_test, {"message": str(i)}) for i in range(60)]
    connection = CountedConnection(engine)
    busy_interval = 0.2
    recorder = LifecycleRecorder(
        connection, flush_interval=0.001, busy_flush_interval=busy_interval
    )
    recorder.start()
    started = time.monotonic()
    for row in rows:  # a steady stream, one event every 10 ms
        recorder.record(
            Transition(row.job_id, "trigger_test", JobStatus.RUNNING, 1, "w1", datetime.now(UTC))
        )
        await asyncio.sleep(0.01)
    await recorder.flushed()
    elapsed = time.monotonic() - started
    await recorder.close()  # closes its connection too

    assert sum(connection.writes) == len(rows)  # every event written, each once
    assert len(connection.writes) <= elapsed / busy_interval + 2  # at most one per interval
    async with engine.connect() as check:
        running = await check.scalar(
            text("SELECT count(*) FROM background_jobs WHERE status = 'running'")
        )
    assert running == len(rows)


async def test_a_held_connection_survives_its_server_side_end(engine: AsyncEngine) -> None:
    connection = HeldConnection(lambda: engine)
    pid = (await connection.execute(text("SELECT pg_backend_pid()"), {}))[0][0]
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await admin.commit()
    await asyncio.sleep(0.2)  # asyncpg notices the closed socket; nothing is sent to check

    new_pid = (await connection.execute(text("SELECT pg_backend_pid()"), {}))[0][0]
    await connection.close()

    assert new_pid != pid

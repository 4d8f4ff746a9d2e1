"""The recorder's retry, with PostgreSQL refusing its writes while a real worker runs jobs.

A trigger on `background_jobs` makes every UPDATE raise (and counts the refusals in a
sequence, which a rollback does not undo). The worker (`litestar ... workers run`) runs its
jobs to the end in Redis meanwhile; its rows stay `queued`. Once writes are allowed again the
rows become true with no help from the reconciler, which is pushed out of the test's window
(RECONCILE_INTERVAL and RECONCILE_GRACE of an hour): only the recorder's kept and retried
batch can bring them. This catches a recorder that drops a failed batch (the rows would stay
`queued`), and one that retries without backoff (the count of refused writes and of the
`could not write job lifecycle, will retry` lines would be in the hundreds, not a handful).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from saq.job import Status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.worker.tasks import trigger_test
from tests.support import APP, VENV_BIN, Running, WaitForRow, app_env, eventually, read_rows

RETRY_LINE = "could not write job lifecycle, will retry"
FIRST_BACKOFF = 0.05  # the recorder's first pause after a failed write, doubled each time
OUTAGE = 2.0  # how long writes are refused, at least

REFUSE_WRITES = [
    "CREATE SEQUENCE refused_lifecycle_writes",
    """
    CREATE FUNCTION refuse_lifecycle_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM nextval('refused_lifecycle_writes');
        RAISE EXCEPTION 'background_jobs refuses writes (test)';
    END $$
    """,
    """
    CREATE TRIGGER refuse_lifecycle_writes BEFORE UPDATE ON background_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_lifecycle_write()
    """,
]
ALLOW_WRITES = "DROP TRIGGER IF EXISTS refuse_lifecycle_writes ON background_jobs"
CLEAN_UP = [
    ALLOW_WRITES,
    "DROP FUNCTION IF EXISTS refuse_lifecycle_write()",
    "DROP SEQUENCE IF EXISTS refused_lifecycle_writes",
]
REFUSED = text(
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refused_lifecycle_writes"
)


class RefusedWrites:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def count(self) -> int:
        async with self._engine.connect() as connection:
            return int(await connection.scalar(REFUSED) or 0)

    async def allow(self) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(text(ALLOW_WRITES))


@asynccontextmanager
async def writes_refused(engine: AsyncEngine) -> AsyncIterator[RefusedWrites]:
    """Every UPDATE of `background_jobs` raises until `allow()`; the database shares the
    session, so everything is dropped again whatever happens."""
    async with engine.begin() as connection:
        for statement in CLEAN_UP + REFUSE_WRITES:
            await connection.execute(text(statement))
    try:
        yield RefusedWrites(engine)
    finally:
        async with engine.begin() as connection:
            for statement in CLEAN_UP:
                await connection.execute(text(statement))


def most_attempts(outage: float) -> int:
    """The most writes a backoff starting at FIRST_BACKOFF and doubling can try in `outage`
    seconds, plus the one in flight when writes are allowed again."""
    return math.floor(1 + math.log2(outage / FIRST_BACKOFF + 1)) + 1


async def test_rows_become_true_after_postgres_refused_their_writes_with_bounded_retries(
    settings: Settings,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    wait_for_row: WaitForRow,
) -> None:
    """Would catch: a failed batch dropped (rows stay `queued`), retries without backoff
    (refusals and retry lines far above what doubling from 50 ms allows in the outage)."""
    enqueuer = make_enqueuer()
    no_reconciler = {"RECONCILE_INTERVAL": "3600", "RECONCILE_GRACE": "3600"}
    async with writes_refused(engine) as refused:
        worker = Running(
            [str(VENV_BIN / "litestar"), "--app", APP, "workers", "run"],
            app_env(settings, **no_reconciler),
            "worker",
        )
        try:
            await asyncio.to_thread(worker.wait_for_line, lambda line: "worker started" in line)
            writes_since = time.monotonic()  # no lifecycle write before the first job
            rows = [
                await enqueuer.enqueue(trigger_test, {"message": f"m{i}", "sleep_seconds": 0})
                for i in range(5)
            ]
            keys = [str(row.job_id) for row in rows]

            async def all_complete_in_redis() -> bool:
                jobs = await queue.jobs(keys)
                return all(job is not None and job.status == Status.COMPLETE for job in jobs)

            await eventually(all_complete_in_redis, what="the jobs complete in Redis")
            await eventually(at_least(1, refused.count), what="a refused write")
            await asyncio.sleep(OUTAGE)
            stale = await read_rows(engine, keys)
            assert {row.status for row in stale.values()} == {"queued"}, worker.tail()

            await refused.allow()
            outage = time.monotonic() - writes_since
            attempts = await refused.count()

            for row in rows:
                done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
                assert (done.attempts, done.result) == (
                    1,
                    {"message": row.arguments["message"], "slept_seconds": 0},
                )
            retry_lines = [line for line in worker.lines if RETRY_LINE in line]
            assert 2 <= attempts <= most_attempts(outage), (attempts, outage, worker.tail())
            assert len(retry_lines) == attempts, worker.tail()
        finally:
            worker.kill()


def at_least(count: int, probe: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return await probe() >= count

    return reached

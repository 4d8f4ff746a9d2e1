"""How the reconciler's passes share the work, seen from outside (`run_once` and its report):
one pass at a time across processes (a Redis lock), and a long backlog walked a page of 500
rows at a time, each pass after the last one's end, then from the start again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.connection import autocommit_sessions
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.reconciler import Reconciler
from app.worker import tasks

ROWS = 520  # more than one page of the reconciler's (500)


def reconciler(enqueuer: Enqueuer, engine: AsyncEngine) -> Reconciler:
    """A reconciler as a worker process builds it; its lock outlives the test (interval)."""
    return Reconciler(
        enqueuer.queue,
        enqueuer,
        autocommit_sessions(lambda: engine),
        interval=100,
        grace=0,
        worker_lost_after=600,
    )


async def queued_jobs(enqueuer: Enqueuer, engine: AsyncEngine) -> None:
    """ROWS queued jobs, rows and Redis agreeing (a pass leaves each alone), and no worker."""
    arguments = {"message": "m", "sleep_seconds": 0}
    await asyncio.gather(*(enqueuer.enqueue(tasks.trigger_test, arguments) for _ in range(ROWS)))
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM background_jobs WHERE status = 'queued'")
        )
    assert count == ROWS


async def test_one_pass_at_a_time_across_processes(
    make_enqueuer: Callable[..., Enqueuer], engine: AsyncEngine
) -> None:
    """Catches: two workers' reconcilers running the same pass at once (each would enqueue a
    missing job again: twice)."""
    enqueuer = make_enqueuer()
    await queued_jobs(enqueuer, engine)
    first, second = reconciler(enqueuer, engine), reconciler(enqueuer, engine)
    assert (await first.run_once()).checked == 500
    assert (await second.run_once()).checked == 0  # the other process's pass holds the lock
    assert (await second.run_once(force=True)).checked == 500


async def test_a_backlog_is_walked_a_page_at_a_time_then_from_the_start(
    make_enqueuer: Callable[..., Enqueuer], engine: AsyncEngine
) -> None:
    """Catches: every pass reading the same first 500 rows (the ones behind them never
    looked at), or a pass that reads them all at once."""
    enqueuer = make_enqueuer()
    await queued_jobs(enqueuer, engine)
    passes = reconciler(enqueuer, engine)
    checked = [(await passes.run_once(force=True)).checked for _ in range(3)]
    assert checked == [500, ROWS - 500, 500]

"""Every kind of job SAQ supports runs under the tracked queue and has its row: cron runs
declared in the worker's settings, scheduled jobs, caller-chosen keys, plain enqueues made
straight on the SAQ queue; and the reconciler keeps such rows true."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from litestar_saq import CronJob
from saq.job import Job
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.connection import autocommit_sessions
from app.db.models import BackgroundJob
from app.jobs.lifecycle import CRON, ROW_ID
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reconciler import LOST_CRON_RUN, REPLACED_RUN, Reconciler
from app.jobs.registry import tracked_task
from app.worker import settings as worker_settings
from tests.support import StartWorker, WaitForRow, eventually

EVERY_SECOND = "* * * * * *"  # croniter's sixth field counts seconds


@tracked_task(timeout=5, attempts=2)
async def every_second(ctx: dict[str, Any]) -> dict[str, str]:
    return {"key": ctx["job"].key}


def row_id(job: Job | None) -> UUID:
    assert job is not None, "SAQ refused the job"
    return UUID(job.meta[ROW_ID])


async def rows_where(engine: AsyncEngine, **columns: Any) -> list[BackgroundJob]:
    async with AsyncSession(engine) as session:
        found = await session.scalars(
            select(BackgroundJob).filter_by(**columns).order_by(BackgroundJob.created_at)
        )
        return list(found)


def one_job(key: str, message: str, **fields: Any) -> Job:
    return Job(
        function="trigger_test", key=key, kwargs={"message": message, "sleep_seconds": 0}, **fields
    )


# -- cron ------------------------------------------------------------------------------------


async def test_a_cron_task_declared_in_the_settings_runs_on_schedule_each_run_with_its_row(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, start_worker: StartWorker
) -> None:
    monkeypatch.setattr(worker_settings, "CRON", (CronJob(every_second, cron=EVERY_SECOND),))
    await start_worker()

    async def three_complete_runs() -> list[BackgroundJob] | None:
        rows = await rows_where(engine, task_name="every_second", status="complete")
        return rows if len(rows) >= 3 else None

    runs = await eventually(three_complete_runs, what="three complete runs of the cron task")
    assert len({run.job_id for run in runs}) == len(runs)  # one row per run, one key for all
    for run in runs:
        assert (run.job_key, run.cron, run.max_attempts) == (
            "cron:every_second",
            EVERY_SECOND,
            2,
        )
        assert run.result == {"key": "cron:every_second"}
        assert run.scheduled_at is not None
        assert run.started_at is not None
        assert run.started_at >= run.scheduled_at  # run on its schedule, not before


# -- jobs enqueued straight on the SAQ queue -------------------------------------------------


async def test_a_callers_own_key_runs_and_each_use_of_the_key_has_its_own_row(
    queue: TrackedQueue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker()
    rows = []
    for message in ("November", "November, again"):
        job = await queue.enqueue(one_job("report:2026-11", message))
        rows.append(await wait_for_row(row_id(job), lambda r: r.status == "complete"))

    first, second = rows
    assert first.job_id != second.job_id
    for row, message in zip(rows, ("November", "November, again"), strict=True):
        assert (row.job_key, row.task_name, row.cron) == ("report:2026-11", "trigger_test", None)
        assert row.arguments == {"message": message, "sleep_seconds": 0}
        assert row.result == {"message": message, "slept_seconds": 0}
        assert (row.attempts, row.max_attempts, row.queue) == (1, 1, queue.name)


async def test_a_key_still_unfinished_is_refused_by_saq_and_makes_no_second_row(
    engine: AsyncEngine, queue: TrackedQueue
) -> None:
    later = int(time.time()) + 3600
    first = await queue.enqueue(one_job("once", "first", scheduled=later))
    again = await queue.enqueue(one_job("once", "again", scheduled=later))
    assert again is None
    await queue.recorder.flushed()

    (row,) = await rows_where(engine, job_key="once")
    assert (row.job_id, row.status) == (row_id(first), "queued")
    assert row.scheduled_at == datetime.fromtimestamp(later, UTC)


async def test_a_scheduled_job_has_its_row_queued_until_it_runs_then_complete(
    queue: TrackedQueue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    at = int(time.time()) + 2
    job = await queue.enqueue("trigger_test", scheduled=at, message="later", sleep_seconds=0)
    # No worker yet: the row can only be waiting.
    queued = await wait_for_row(row_id(job), lambda r: r.status == "queued")
    assert queued.scheduled_at == datetime.fromtimestamp(at, UTC)
    assert queued.arguments == {"message": "later", "sleep_seconds": 0}

    await start_worker()
    done = await wait_for_row(row_id(job), lambda r: r.status == "complete")
    assert done.started_at is not None
    assert done.started_at >= datetime.fromtimestamp(at, UTC)


async def test_a_plain_enqueue_with_saqs_own_key_has_its_row(
    queue: TrackedQueue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    job = await queue.enqueue("trigger_test", message="plain")
    assert job is not None
    await start_worker()
    done = await wait_for_row(row_id(job), lambda r: r.status == "complete")
    assert done.job_key == job.key  # SAQ's uuid1 key, kept beside the row's own id
    assert done.result == {"message": "plain", "slept_seconds": 0.1}


async def test_such_a_job_is_cancelled_through_the_service_by_its_key(
    session: AsyncSession,
    queue: TrackedQueue,
    make_enqueuer: Any,
    wait_for_row: WaitForRow,
) -> None:
    job = await queue.enqueue(one_job("report:cancel", "stop me", scheduled=int(time.time()) + 60))
    row = await wait_for_row(row_id(job), lambda r: r.status == "queued")
    await BackgroundJobService(session, enqueuer=make_enqueuer()).cancel(row, "not needed")
    aborted = await wait_for_row(row.job_id, lambda r: r.status == "aborted")
    assert aborted.error == "not needed"


# -- the reconciler with such rows -----------------------------------------------------------


async def reconcile(enqueuer: Enqueuer, engine: AsyncEngine) -> None:
    sessions = autocommit_sessions(lambda: engine)
    reconciler = Reconciler(
        enqueuer.queue, enqueuer, sessions, interval=1, grace=0, worker_lost_after=0
    )
    await reconciler.run_once(force=True)


async def test_a_job_with_its_own_key_lost_from_redis_runs_again_under_its_key_and_row(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Any,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    job = await queue.enqueue(one_job("report:lost", "run me anyway"))
    await wait_for_row(row_id(job), lambda r: r.status == "queued")
    await queue.redis.flushdb()

    await reconcile(make_enqueuer(), engine)
    again = await queue.job("report:lost")
    assert again is not None
    assert row_id(again) == row_id(job)
    await start_worker()
    await wait_for_row(row_id(job), lambda r: r.status == "complete")
    assert len(await rows_where(engine, job_key="report:lost")) == 1


async def test_a_cron_run_lost_from_redis_ends_aborted_saying_the_schedule_goes_on(
    queue: TrackedQueue, engine: AsyncEngine, make_enqueuer: Any, wait_for_row: WaitForRow
) -> None:
    # What the worker's schedule enqueues for a cron task (see `tracked_cron`).
    run = one_job("cron:trigger_test", "nightly", meta={CRON: "0 3 * * *"})
    run.scheduled = int(time.time()) + 3600
    job = await queue.enqueue(run)
    await wait_for_row(row_id(job), lambda r: r.status == "queued" and r.cron == "0 3 * * *")
    await queue.redis.flushdb()

    await reconcile(make_enqueuer(), engine)
    lost = await wait_for_row(row_id(job), lambda r: r.status == "aborted")
    assert lost.error == LOST_CRON_RUN
    assert await queue.job("cron:trigger_test") is None  # not enqueued again


async def test_a_lost_job_whose_key_now_holds_another_run_ends_aborted(
    queue: TrackedQueue, engine: AsyncEngine, make_enqueuer: Any, wait_for_row: WaitForRow
) -> None:
    later = int(time.time()) + 3600
    lost = await queue.enqueue(one_job("report:2026-12", "lost", scheduled=later))
    await wait_for_row(row_id(lost), lambda r: r.status == "queued")
    await queue.redis.flushdb()
    replacement = await queue.enqueue(one_job("report:2026-12", "replacement", scheduled=later))
    await wait_for_row(row_id(replacement), lambda r: r.status == "queued")

    await reconcile(make_enqueuer(), engine)
    gone = await wait_for_row(row_id(lost), lambda r: r.status == "aborted")
    assert gone.error == REPLACED_RUN
    still = await wait_for_row(row_id(replacement), lambda r: r.status == "queued")
    assert still.error is None

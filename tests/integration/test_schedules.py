"""`/api/v1/schedules` and the pause of a schedule where its runs are enqueued: the list (next
run, last runs from the rows), pause and resume (audited, idempotent, 404 for an unknown
name), `TrackedQueue._enqueue` refusing a paused schedule's run, the withdrawal of a run that
waits for its time, and the last pauses read holding while PostgreSQL is away.

Two worker processes and a Redis that loses its data: tests/e2e/test_schedule_pause.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.asgi import create_app
from app.config import Settings
from app.db.connection import autocommit_sessions
from app.db.models import BackgroundJob, SchedulePause
from app.jobs.lifecycle import CRON
from app.jobs.queue.pauses import PAUSES_TTL, WITHDRAW_MARGIN, SchedulePauses
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import tracked_cron
from tests.support import StartWorker, WaitForRow, eventually
from tests.support.app import CRON_REGISTRY, SCHEDULES

EVERY_SECOND = SCHEDULES[:1]
NAME = "every_second"
KEY = f"cron:{NAME}"


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncTestClient[Any]]:
    """The API of an app whose CRON runs `every_second` (open mode: an admin)."""
    app = create_app(settings, CRON_REGISTRY, cron=EVERY_SECOND)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def start_cron_worker(start_worker: StartWorker, settings: Settings) -> None:
    schedule = [tracked_cron(job, settings.job_timeout) for job in EVERY_SECOND]
    await start_worker(CRON_REGISTRY, scheduled_tasks=schedule)


async def runs_of(engine: AsyncEngine, queue: str) -> int:
    async with AsyncSession(engine) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(BackgroundJob)
            .where(BackgroundJob.task_name == NAME, BackgroundJob.queue == queue)
        )
    return int(count or 0)


async def test_the_list_gives_each_schedule_its_next_run_and_last_runs(
    client: AsyncTestClient[Any], settings: Settings, start_worker: StartWorker
) -> None:
    await start_cron_worker(start_worker, settings)

    async def two_complete_runs() -> dict[str, Any] | None:
        (schedule,) = (await client.get("/api/v1/schedules?runs=5")).json()["schedules"]
        done = [run for run in schedule["runs"] if run["status"] == "complete"]
        return schedule if len(done) >= 2 else None

    asked = datetime.now(UTC)
    schedule = await eventually(two_complete_runs, what="two complete runs of the schedule")
    assert (schedule["name"], schedule["cron"], schedule["queue"]) == (
        NAME,
        "* * * * * *",
        settings.queue_name,
    )
    assert schedule["job_key"] == KEY
    assert (schedule["paused"], schedule["paused_by"], schedule["paused_at"]) == (False, None, None)
    next_run = datetime.fromisoformat(schedule["next_run_at"])
    assert asked < next_run <= datetime.now(UTC) + timedelta(seconds=1)
    runs = schedule["runs"]
    assert 2 <= len(runs) <= 5
    created = [run["created_at"] for run in runs]
    assert created == sorted(created, reverse=True), "newest first"
    done = next(run for run in runs if run["status"] == "complete")
    assert done["scheduled_at"] is not None
    assert done["error"] is None
    assert done["run_seconds"] is not None
    assert done["run_seconds"] >= 0
    assert done["attempts"] == 1

    none = (await client.get("/api/v1/schedules?runs=0")).json()["schedules"]
    assert none[0]["runs"] == []
    for bad in ("51", "-1", "x"):
        answer = await client.get(f"/api/v1/schedules?runs={bad}")
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]


async def test_pause_and_resume_are_audited_idempotent_and_404_for_unknown_names(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    paused = await client.post(f"/api/v1/schedules/{NAME}/pause")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["paused"] is True
    assert body["paused_by"] == "anonymous (auth disabled)"
    first_at = body["paused_at"]
    again = (await client.post(f"/api/v1/schedules/{NAME}/pause")).json()
    assert (again["paused"], again["paused_at"]) == (True, first_at), "the first pause stands"
    listed = (await client.get("/api/v1/schedules")).json()["schedules"][0]
    assert (listed["paused"], listed["paused_at"]) == (True, first_at)

    resumed = await client.post(f"/api/v1/schedules/{NAME}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert (await client.post(f"/api/v1/schedules/{NAME}/resume")).json()["paused"] is False

    for path in ("/api/v1/schedules/nope/pause", "/api/v1/schedules/nope/resume"):
        unknown = await client.post(path)
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["detail"]
        assert NAME in unknown.json()["detail"]

    audit = (await client.get("/api/v1/audit?limit=10")).json()
    this_schedule = {"queue": settings.queue_name, "schedule": NAME}
    ours = [row for row in audit if row["filter"] == this_schedule]
    assert [(row["action"], row["detail"]) for row in ours] == [
        ("schedule_resume", "was not paused"),
        ("schedule_resume", "paused by anonymous (auth disabled)"),
        ("schedule_pause", "already paused"),
        ("schedule_pause", None),
    ]
    assert {row["outcome"] for row in ours} == {"ok"}
    assert not [row for row in audit if "nope" in str(row["filter"])], "no row for a 404"


def cron_run(queue: TrackedQueue, scheduled: int) -> dict[str, Any]:
    """What SAQ's worker hands `queue.enqueue` for a run of the schedule (`Worker.schedule`)."""
    return {"key": KEY, "scheduled": scheduled, "meta": {CRON: "* * * * * *"}}


async def pause(engine: AsyncEngine, queue_name: str, by: str = "tester") -> None:
    async with AsyncSession(engine) as session:
        session.add(
            SchedulePause(queue=queue_name, name=NAME, paused_by=by, paused_at=datetime.now(UTC))
        )
        await session.commit()


@pytest.fixture
def fresh_pauses(queue: TrackedQueue, engine: AsyncEngine) -> TrackedQueue:
    """The queue, reading the pauses at every enqueue (no cache) so that a test need not wait."""
    queue.pauses = SchedulePauses(autocommit_sessions(lambda: engine), queue.name, ttl=0)
    return queue


async def test_a_run_of_a_paused_schedule_is_refused_where_it_is_enqueued(
    queue: TrackedQueue, engine: AsyncEngine
) -> None:
    """Catches: a paused schedule whose runs still reach Redis and the table."""
    await pause(engine, queue.name)
    assert await queue.enqueue(NAME, **cron_run(queue, 0)) is None
    assert await queue.job(KEY) is None
    assert await runs_of(engine, queue.name) == 0
    # The same task enqueued by other means is not a run of the schedule: not refused.
    plain = await queue.enqueue(NAME, key="by-hand")
    assert plain is not None


async def test_a_run_waiting_for_its_time_is_withdrawn(
    fresh_pauses: TrackedQueue, engine: AsyncEngine, wait_for_row: WaitForRow
) -> None:
    """SAQ enqueues a schedule's next run ahead of its time: a nightly run enqueued before the
    pause would run that night. Catches: a pause that leaves it waiting in Redis."""
    queue = fresh_pauses
    later = await queue.enqueue(NAME, **cron_run(queue, int(time.time()) + 3600))
    assert later is not None
    await pause(engine, queue.name, by="bgj_Xb3k9QeZ")
    assert await queue.enqueue(NAME, **cron_run(queue, int(time.time()) + 3601)) is None
    row = await wait_for_row(later.meta["job_id"], lambda r: r.status == "aborted")
    assert row.error == f"schedule {NAME} paused by bgj_Xb3k9QeZ"
    ended = await queue.job(KEY)
    assert ended is None or ended.status == "aborted"


async def test_a_run_due_within_the_margin_is_left_to_run(
    fresh_pauses: TrackedQueue, engine: AsyncEngine
) -> None:
    """It may be on its way to a worker already: an abort would race the worker's start."""
    queue = fresh_pauses
    soon = await queue.enqueue(NAME, **cron_run(queue, int(time.time() + WITHDRAW_MARGIN / 2)))
    assert soon is not None
    await pause(engine, queue.name)
    assert await queue.enqueue(NAME, **cron_run(queue, 0)) is None
    waiting = await queue.job(KEY)
    assert waiting is not None
    assert waiting.status == "queued"


async def test_the_pauses_last_read_hold_while_postgresql_is_away(
    settings: Settings, engine: AsyncEngine, servers: Any
) -> None:
    """A worker that cannot read the pauses keeps the last ones it read: a schedule stays
    paused through a PostgreSQL outage (and an unpaused one keeps running)."""
    await pause(engine, settings.queue_name)
    dead = create_async_engine("postgresql+asyncpg://user:password@127.0.0.1:9/none")
    now = [0.0]
    reachable = [True]
    real, gone = autocommit_sessions(lambda: engine), autocommit_sessions(lambda: dead)

    def sessions() -> AsyncSession:
        return real() if reachable[0] else gone()

    pauses = SchedulePauses(sessions, settings.queue_name, clock=lambda: now[0])
    assert set(await pauses.paused()) == {NAME}
    reachable[0] = False
    now[0] += PAUSES_TTL + 1
    assert set(await pauses.paused()) == {NAME}
    await dead.dispose()


@pytest.fixture
def clocked(settings: Settings) -> Callable[..., SchedulePauses]:
    def make(sessions: Callable[[], AsyncSession], now: list[float]) -> SchedulePauses:
        return SchedulePauses(sessions, settings.queue_name, clock=lambda: now[0])

    return make


async def test_a_pause_and_a_resume_are_seen_within_the_ttl(
    settings: Settings, engine: AsyncEngine, clocked: Callable[..., SchedulePauses]
) -> None:
    now = [0.0]
    pauses = clocked(autocommit_sessions(lambda: engine), now)
    assert await pauses.paused() == {}
    await pause(engine, settings.queue_name)
    assert await pauses.paused() == {}, "read again only after the TTL"
    now[0] += PAUSES_TTL
    assert await pauses.paused() == {NAME: "tester"}

"""`GET /api/v1/jobs/stats` and the overview's chart read `job_stats`, which the recorder's own
statement keeps: on a dataset written through the real write path (batches of transitions,
repeated and late events, jobs first seen at their end, operators' retries), every window's
answer equals what the rows themselves say: the counts exactly, the percentiles within the
documented bound of `percentile_cont` (app/jobs/histogram.py)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import Parts
from app.config import Settings
from app.db.connection import HeldConnection
from app.db.models import BackgroundJob
from app.jobs.histogram import LOWEST, RATIO, RUN_COLUMNS
from app.jobs.ids import new_job_id
from app.jobs.lifecycle import JobStatus, NewRow, Transition
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reads.stats import PER_MINUTE, WINDOWS, window_start
from app.jobs.record.counting import COMPACT
from app.jobs.record.retry import RETRY_ENDED, retry_parameters
from app.jobs.record.statements import apply_transitions
from app.ops.partitions import Partitions
from app.ops.retention import Retention
from tests.support import eventually

TASKS = ("send_email", "import_csv", "rare")
PROJECTS = (UUID(int=7), UUID(int=8), None)
ENDS = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED)

# What the stats said before: the window's rows, read one by one.
_RAW = """
SELECT task_name, count(*) AS total,
    count(*) FILTER (WHERE status = 'queued') AS queued,
    count(*) FILTER (WHERE status = 'running') AS running,
    count(*) FILTER (WHERE status = 'complete') AS complete,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'aborted') AS aborted,
    percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP
        (ORDER BY EXTRACT(EPOCH FROM completed_at - started_at)::float8)
        FILTER (WHERE started_at IS NOT NULL AND completed_at IS NOT NULL) AS run_seconds,
    percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP
        (ORDER BY EXTRACT(EPOCH FROM started_at - created_at)::float8)
        FILTER (WHERE started_at IS NOT NULL) AS wait_seconds
FROM background_jobs WHERE created_at >= :since {project}
GROUP BY task_name ORDER BY task_name
"""
_RAW_PER_MINUTE = """
SELECT task_name, date_trunc('minute', completed_at, 'UTC') AS minute,
    count(*) FILTER (WHERE status = 'complete') AS complete,
    count(*) FILTER (WHERE status = 'failed') AS failed
FROM background_jobs WHERE completed_at >= :since AND status IN ('complete', 'failed')
GROUP BY 1, 2 ORDER BY 1, 2
"""


def seconds(draw: random.Random) -> float:
    """A duration from 0.2 ms to two hours, log-uniform."""
    return math.exp(draw.uniform(math.log(2e-4), math.log(7200)))


class Dataset:
    """Jobs written as the system writes them: rows inserted `queued`, then batches of
    transitions through `apply_transitions` (the recorder's statement)."""

    def __init__(self, engine: AsyncEngine, now: datetime) -> None:
        self.held = HeldConnection(lambda: engine)
        self.engine = engine
        self.now = now
        self.draw = random.Random(19)
        self.created: dict[UUID, datetime] = {}

    async def queued(self, count: int, within: timedelta) -> list[Transition]:
        rows, firsts = [], []
        for _ in range(count):
            created = self.now - within * self.draw.random() - timedelta(seconds=1)
            task, project = self.draw.choice(TASKS), self.draw.choice(PROJECTS)
            job_id = new_job_id(created)
            rows.append(
                {"job_id": job_id, "task_name": task, "queue": "q", "status": "queued",
                 "project_id": project, "created_at": created, "updated_at": created}
            )  # fmt: skip
            self.created[job_id] = created
            firsts.append(Transition(job_id, task, JobStatus.QUEUED, 0))
        async with self.engine.begin() as connection:
            await connection.execute(insert(BackgroundJob), rows)
        return firsts

    def started(self, job: Transition, attempt: int = 1, retries: int = 0) -> Transition:
        started = self.created[job.job_id] + timedelta(seconds=seconds(self.draw))
        started = min(started, self.now)
        return replace(
            job, status=JobStatus.RUNNING, attempt=attempt, worker_id="w", started_at=started,
            completed_at=None, manual_retries=retries,
        )  # fmt: skip

    def ended(self, running: Transition, status: JobStatus) -> Transition:
        assert running.started_at is not None
        ended = min(running.started_at + timedelta(seconds=seconds(self.draw)), self.now)
        return replace(running, status=status, completed_at=ended)

    async def apply(self, transitions: Sequence[Transition]) -> None:
        for start in range(0, len(transitions), 25):  # batches as the recorder makes them
            await apply_transitions(self.held.execute, transitions[start : start + 25])


async def compact(engine: AsyncEngine) -> None:
    """What the workers do every few seconds: the pending counts into job_stats."""
    async with engine.begin() as connection:
        await connection.execute(text(COMPACT))


@pytest.fixture(params=["pending", "compacted midway"])
async def dataset(engine: AsyncEngine, request: pytest.FixtureRequest) -> AsyncEngine:
    """Jobs of a week, every count still pending or some of them compacted (the answers
    read both tables in one statement, so they must not change)."""
    now = datetime.now(UTC)
    data = Dataset(engine, now)
    week = await data.queued(300, timedelta(days=7))
    hour = await data.queued(200, timedelta(minutes=50))
    jobs = week + hour
    running = [data.started(job) for job in jobs[:-40]]  # 40 stay queued
    ended = [data.ended(job, data.draw.choice(ENDS)) for job in running[:-40]]  # 40 run on
    await data.apply(running)
    await data.apply(ended)
    if request.param == "compacted midway":
        await compact(engine)
    # Repeated and late events: the guard ignores them, and so does the count.
    await data.apply(ended[:50] + [replace(e, status=JobStatus.RUNNING) for e in ended[50:80]])
    # A retry waiting for its next attempt: back to queued, its start kept.
    await data.apply([replace(job, status=JobStatus.QUEUED) for job in running[-40:-30]])
    # An operator retries failed and aborted jobs; some of them end again.
    retryable = [e for e in ended if e.status is not JobStatus.COMPLETE][:60]
    async with data.engine.begin() as connection:
        await connection.execute(RETRY_ENDED, retry_parameters([e.job_id for e in retryable], "t"))
    again = [data.started(e, attempt=2, retries=1) for e in retryable[:30]]
    await data.apply(again)
    await data.apply([data.ended(job, JobStatus.COMPLETE) for job in again[:20]])
    # Jobs the outbox did not make, first seen when they ended (the row made at its end).
    first_seen = []
    for _ in range(20):
        created = now - timedelta(minutes=data.draw.uniform(1, 300))
        job_id = new_job_id(created)
        row = NewRow("k-" + str(uuid4()), "cron_task", "q", "{}", 1, None, None, created)
        data.created[job_id] = created
        start = data.started(Transition(job_id, "cron_task", JobStatus.QUEUED, 0))
        first_seen.append(replace(data.ended(start, JobStatus.COMPLETE), new_row=row))
    await data.apply(first_seen)
    await data.held.close()
    return engine


def within_bound(estimate: float, exact: float) -> bool:
    """app/jobs/histogram.py's bound: a factor 2^(1/8), give or take half of LOWEST."""
    factor = math.sqrt(RATIO)
    return exact / factor - LOWEST / 2 - 1e-9 <= estimate <= exact * factor + LOWEST / 2 + 1e-9


@pytest.mark.parametrize("project", [None, PROJECTS[0]], ids=["every project", "one project"])
@pytest.mark.parametrize("window", list(WINDOWS))
async def test_every_window_says_what_the_rows_say(
    dataset: AsyncEngine, session: AsyncSession, window: str, project: UUID | None
) -> None:
    now = datetime.now(UTC)
    since, counted = await BackgroundJobService(session).stats(
        window=window, project_id=project, now=now
    )
    assert since == window_start(window, now)[1]
    raw = (
        await session.execute(
            text(_RAW.format(project="" if project is None else "AND project_id = :project")),
            {"since": since, **({} if project is None else {"project": project})},
        )
    ).mappings()
    expected = {row["task_name"]: row for row in raw}
    assert [row["task_name"] for row in counted] == sorted(expected)
    assert len(counted) >= 2
    for row in counted:
        rows = expected[row["task_name"]]
        names = ("total", "queued", "running", "complete", "failed", "aborted")
        assert {n: row[n] for n in names} == {n: rows[n] for n in names}, row["task_name"]
        for measure in ("run_seconds", "wait_seconds"):
            if rows[measure] is None:
                assert row[measure] is None
                continue
            for estimate, exact in zip(row[measure], rows[measure], strict=True):
                assert within_bound(estimate, exact), (row["task_name"], measure, estimate, exact)


async def test_the_overviews_chart_says_what_the_rows_say(
    dataset: AsyncEngine, session: AsyncSession
) -> None:
    since = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    counted = (await session.execute(PER_MINUTE, {"since": since})).all()
    raw = (await session.execute(text(_RAW_PER_MINUTE), {"since": since})).all()
    assert len(raw) >= 10
    assert [tuple(row) for row in counted] == [tuple(row) for row in raw]
    assert any(row[3] for row in raw)  # some minutes had failures


async def test_the_counts_are_the_final_rows_and_nothing_else(
    dataset: AsyncEngine, session: AsyncSession
) -> None:
    """Each final row is counted once per kind; retried rows not at all, until they end."""
    await compact(dataset)
    ended = await session.scalar(
        text(
            "SELECT count(*) FROM background_jobs WHERE status IN ('complete', 'failed', 'aborted')"
        )
    )
    every_project = {"all": UUID(int=0)}
    for kind in ("minute", "hour", "ended"):
        counted = await session.scalar(
            text(
                "SELECT sum(complete + failed + aborted) FROM job_stats"
                " WHERE kind = :kind AND project_id = :all"
            ),
            {"kind": kind, **every_project},
        )
        assert counted == ended > 300, kind
    negative = " OR ".join(f"{c} < 0" for c in ("complete", "failed", "aborted", *RUN_COLUMNS))
    assert await session.scalar(text(f"SELECT count(*) FROM job_stats WHERE {negative}")) == 0  # noqa: S608


async def test_the_workers_loop_moves_the_pending_counts(
    dataset: AsyncEngine, session: AsyncSession, parts: Parts, settings: Settings
) -> None:
    """Every worker's maintenance loop compacts the pending counts, and the answers stay."""
    before = await BackgroundJobService(session).stats(window="7d", project_id=None)
    partitions = Partitions(lambda: dataset, width=timedelta(days=1), ahead=3)
    loop = asyncio.create_task(
        Retention(
            parts.sessions, partitions, parts.queue.redis, settings.queue_name,
            job_days=0, audit_days=0, interval=3600,
        ).run()
    )  # fmt: skip

    async def nothing_pending() -> bool:
        async with dataset.connect() as connection:
            return not await connection.scalar(text("SELECT count(*) FROM job_stats_pending"))

    try:
        await eventually(nothing_pending, what="the pending counts compacted")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    after = await BackgroundJobService(session).stats(window="7d", project_id=None, now=None)
    assert after[1] == before[1]

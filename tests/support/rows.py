"""Reading `background_jobs` from a test: waiting for a row, counting rows, saying what a row is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.connection import HeldConnection
from app.db.models import BackgroundJob
from app.jobs.lifecycle import TERMINAL_STATUSES, JobStatus, Transition
from app.jobs.record.statements import apply_transitions

T = TypeVar("T")

# The `wait_for_row` fixture of tests/integration: (job_id, check, what=...) -> the row.
WaitForRow = Callable[..., Awaitable[BackgroundJob]]


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = 20.0,
    what: str = "condition",
    explain: Callable[[], Awaitable[str]] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; the bound only stops a broken test.

    `explain`, when given, says what was seen instead (the rows, the logs) on failure.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            seen = f"\n{await explain()}" if explain is not None else ""
            raise AssertionError(f"gave up waiting for {what} after {within}s{seen}")
        await asyncio.sleep(0.05)


async def read_rows(engine: AsyncEngine, job_ids: Iterable[UUID | str]) -> dict[str, BackgroundJob]:
    """The rows of `job_ids` as they are now, by job id (as text); missing ones are absent."""
    ids = [UUID(str(job_id)) for job_id in job_ids]
    async with AsyncSession(engine, expire_on_commit=False) as session:
        rows = await session.scalars(select(BackgroundJob).where(BackgroundJob.job_id.in_(ids)))
        return {str(row.job_id): row for row in rows}


def describe_row(row: BackgroundJob | None) -> str:
    """One line on where a job's row stands: what a failure message needs to say."""
    if row is None:
        return "no row"
    return (
        f"status={row.status} attempts={row.attempts}/{row.max_attempts} "
        f"worker={row.worker_id} error={row.error!r} errors={[e.get('error') for e in row.errors]}"
    )


async def wait_for_row(
    engine: AsyncEngine,
    job_id: UUID | str,
    check: Callable[[BackgroundJob], bool],
    *,
    what: str = "row",
    within: float = 20.0,
    logs: Callable[[], str] | None = None,
) -> BackgroundJob:
    """The row of `job_id` once it satisfies `check` (read fresh each time).

    On failure the message names the job, its last status and the tail of `logs`.
    """
    last: list[BackgroundJob | None] = [None]

    async def probe() -> BackgroundJob | None:
        last[0] = (await read_rows(engine, [job_id])).get(str(job_id))
        return last[0] if last[0] is not None and check(last[0]) else None

    async def explain() -> str:
        tail = f"\n{logs()}" if logs is not None else ""
        return f"job {job_id}: {describe_row(last[0])}{tail}"

    return await eventually(probe, within=within, what=f"{what} (job {job_id})", explain=explain)


async def count_rows(target: AsyncSession | AsyncEngine) -> int:
    """How many rows `background_jobs` holds, seen from outside any open transaction."""
    statement = select(func.count()).select_from(BackgroundJob)
    if isinstance(target, AsyncEngine):
        async with AsyncSession(target) as session:
            return int(await session.scalar(statement) or 0)
    target.expire_all()
    count = int(await target.scalar(statement) or 0)
    await target.commit()  # the next read starts a new snapshot
    return count


async def insert_rows(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """`background_jobs` rows as given, in one statement (tests that need a table's shape)."""
    async with engine.begin() as connection:
        await connection.execute(insert(BackgroundJob.__table__), rows)


async def record_rows(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """`background_jobs` rows as the system writes them: inserted `queued` (or `waiting`,
    which nothing moves a row to) at their `created_at`, then moved to their status (through
    `running` at their `started_at`, if any) by the recorder's statement, which also counts
    the ended ones in `job_stats`."""
    waiting = JobStatus.WAITING.value
    queued = [
        {**row, "status": waiting if row["status"] == waiting else "queued",
         "started_at": None, "completed_at": None, "updated_at": row["created_at"]}
        for row in rows
    ]  # fmt: skip
    await insert_rows(engine, queued)
    started, ended = [], []
    for row in rows:
        status = JobStatus(row["status"])
        if row.get("started_at") is not None:
            started.append(
                Transition(row["job_id"], row["task_name"], JobStatus.RUNNING, 1,
                           worker_id="w", started_at=row["started_at"])
            )  # fmt: skip
        if status in TERMINAL_STATUSES:
            ended.append(
                Transition(row["job_id"], row["task_name"], status, 1,
                           started_at=row.get("started_at"), completed_at=row["completed_at"])
            )  # fmt: skip
    held = HeldConnection(lambda: engine)
    try:
        for batch in (started, ended):
            if batch:
                await apply_transitions(held.execute, batch)
    finally:
        await held.close()


async def counted_and_final(engine: AsyncEngine) -> tuple[dict[str, int], dict[str, int]]:
    """Per final status: what `job_stats` (with its pending rows) counts, every project, by
    minute of creation; and how many rows are in that status. Equal when every statement
    that makes a row final counts it, and every one that takes it out of it takes it back."""
    every = {"all": UUID(int=0)}
    async with engine.connect() as connection:
        final = dict(
            (await connection.execute(
                text("SELECT status, count(*) FROM background_jobs GROUP BY status")
            )).all()
        )  # fmt: skip
        compacted = (await connection.execute(
            text("SELECT coalesce(sum(complete), 0), coalesce(sum(failed), 0),"
                 " coalesce(sum(aborted), 0) FROM job_stats"
                 " WHERE kind = 'minute' AND project_id = :all"),
            every,
        )).one()  # fmt: skip
        pending = dict(
            (await connection.execute(
                text("SELECT status, sum(n) FROM job_stats_pending"
                     " WHERE kind = 'minute' AND project_id = :all GROUP BY status"),
                every,
            )).all()
        )  # fmt: skip
    statuses = [s.value for s in JobStatus if s in TERMINAL_STATUSES]
    counted = {s: int(c) + int(pending.get(s, 0)) for s, c in zip(statuses, compacted, strict=True)}
    return counted, {s: int(final.get(s, 0)) for s in statuses}

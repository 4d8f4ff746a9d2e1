"""Retention and jobs that wait for others (`after=`): a partition is dropped, not deleted
from, so no ON DELETE runs. A waiting child whose parent's row went with a partition is no
longer held back by it, and the links of the children a partition took go after it
(app/ops/dropped_rows.py); a child put back keeps its links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import Parts
from app.config import Settings
from app.jobs.lifecycle import JobStatus
from app.jobs.record.dependencies import repair_waiting
from tests.integration.test_retention import OLD, RECENT, history, insert_jobs, retention

__all__ = ["history"]  # the partitions back after each test (an autouse fixture)


async def link(engine: AsyncEngine, *pairs: tuple[UUID, UUID]) -> None:
    """`after=` links (parent, child), not yet counted; each child waits for one more."""
    async with engine.begin() as connection:
        for parent, child in pairs:
            await connection.execute(
                text("INSERT INTO job_dependencies (parent_id, child_id) VALUES (:p, :c)"),
                {"p": parent, "c": child},
            )
            await connection.execute(
                text(
                    "UPDATE background_jobs SET parents_left = parents_left + 1"
                    " WHERE job_id = :c AND status = 'waiting'"
                ),
                {"c": child},
            )


async def links_left(engine: AsyncEngine) -> set[tuple[UUID, UUID]]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT parent_id, child_id FROM job_dependencies"))
        return {(parent, child) for parent, child in rows.all()}


async def test_a_waiting_child_whose_parent_was_dropped_is_released_by_the_repair(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    """The parent completed long ago and its release of the child was lost (a killed
    worker); once its partition is dropped, the reconciler's repair releases the child."""
    (parent,) = await insert_jobs(engine, (JobStatus.COMPLETE, OLD))
    (child,) = await insert_jobs(engine, (JobStatus.WAITING, RECENT))
    await link(engine, (parent, child))

    pruned = await retention(parts, settings, engine).prune_jobs(30)
    assert pruned.deleted == 1  # the parent's row, with its partition

    async def execute(statement: Any, parameters: Any) -> Any:
        async with engine.begin() as connection:
            return (await connection.execute(statement, parameters)).all()

    settled = await repair_waiting(execute, datetime.now(UTC) + timedelta(minutes=1))
    assert [job.job_id for job in settled.released] == [child]
    async with engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT status FROM background_jobs WHERE job_id = :c"), {"c": child}
        )
    assert status == "queued"
    assert await links_left(engine) == {(parent, child)}  # its child is still there


async def test_the_children_a_dropped_partition_took_take_their_links(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    parent, gone_child, kept_child = await insert_jobs(
        engine,
        (JobStatus.COMPLETE, OLD),
        (JobStatus.COMPLETE, OLD),  # dropped with its partition
        (JobStatus.WAITING, OLD),  # put back: unfinished
    )
    running, recent_child = await insert_jobs(
        engine, (JobStatus.RUNNING, RECENT), (JobStatus.COMPLETE, RECENT)
    )
    await link(
        engine,
        (parent, gone_child),
        (parent, kept_child),
        (running, kept_child),
        (parent, recent_child),  # a partition within the window: its child stays
    )

    pruned = await retention(parts, settings, engine).prune_jobs(30)

    assert pruned.deleted == 2
    assert await links_left(engine) == {
        (parent, kept_child),
        (running, kept_child),
        (parent, recent_child),
    }

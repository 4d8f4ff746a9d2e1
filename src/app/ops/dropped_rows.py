"""What a dropped partition of `background_jobs` leaves in other tables, deleted after it: its
rows' Idempotency-Keys and its children's links (`after=`). A DROP fires no ON DELETE, and
neither table has a foreign key to the partitioned table; a row put back keeps both (they
are deleted only where no row of their job is left)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import text

from app.jobs.ids import first_id_at
from app.ops.partition_ranges import FIRST, TABLE, Partition

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

BATCH = 10_000  # rows deleted per statement

# Keys claimed at the time of a row of the range whose row is gone.
_FORGET_KEYS = text(
    f"""
    WITH doomed AS MATERIALIZED (
        SELECT k.idempotency_key FROM job_idempotency_keys AS k
        WHERE k.created_at >= :start AND k.created_at < :end
          AND NOT EXISTS (SELECT 1 FROM {TABLE} AS b
                          WHERE b.job_id = k.job_id AND b.created_at = k.created_at)
        LIMIT :batch
    )
    DELETE FROM job_idempotency_keys AS k USING doomed
    WHERE k.idempotency_key = doomed.idempotency_key
    """  # noqa: S608 - constants only
)
# Links of children whose id spells a time in the range (every child's id was made by the
# outbox: app/jobs/ids.py), found through the index on child_id, whose row is gone. A link
# whose parent is gone but whose child stays is kept: the child's row reads a parent gone as
# no longer holding it back (app/jobs/record/dependencies.py).
_FORGET_LINKS = text(
    f"""
    WITH doomed AS MATERIALIZED (
        SELECT d.parent_id, d.child_id FROM job_dependencies AS d
        WHERE d.child_id >= CAST(:low AS uuid) AND d.child_id < CAST(:high AS uuid)
          AND NOT EXISTS (SELECT 1 FROM {TABLE} AS b WHERE b.job_id = d.child_id
                          AND b.created_at = job_id_created_at(d.child_id))
        LIMIT :batch
    )
    DELETE FROM job_dependencies AS d USING doomed
    WHERE d.parent_id = doomed.parent_id AND d.child_id = doomed.child_id
    """  # noqa: S608 - constants only
)


async def forget_dropped(engine: Callable[[], AsyncEngine], partition: Partition) -> None:
    """Delete what `partition`'s dropped rows left (see the module's docstring), in batches."""
    start = partition.start or FIRST
    for statement, bounds in (
        (_FORGET_KEYS, {"start": start, "end": partition.end}),
        (_FORGET_LINKS, {"low": first_id_at(start), "high": first_id_at(partition.end)}),
    ):
        while True:
            async with engine().begin() as connection:
                deleted = (await connection.execute(statement, {**bounds, "batch": BATCH})).rowcount
            if deleted < BATCH:
                break

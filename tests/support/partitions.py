"""Partitions for tests whose rows span a history: the migration's first partition covers
everything before its cutoff, which is not how a table that has run for a while looks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ops.partitions import Partitions


async def partition_history(
    engine: AsyncEngine, since: timedelta, width: timedelta = timedelta(days=1), ahead: int = 3
) -> Partitions:
    """Replace the (empty) first partition with partitions of `width` from `since` ago to
    `ahead` widths past now, as the workers would have made them."""
    async with engine.begin() as connection:
        rows = await connection.scalar(text("SELECT count(*) FROM background_jobs_legacy"))
        assert rows == 0, "partition_history is for a table that holds nothing yet"
        await connection.execute(text("DROP TABLE background_jobs_legacy"))
    partitions = Partitions(lambda: engine, width=width, ahead=ahead)
    await partitions.ensure(since=datetime.now(UTC) - since)
    return partitions

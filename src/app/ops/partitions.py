"""`background_jobs`'s partitions: made ahead of time, dropped whole once past the window.

The table is partitioned by range of `created_at` (migration 0010_partitioned_jobs), one
partition per `width` (JOB_PARTITION_MINUTES, epoch-aligned), and has no default partition:
one would keep PostgreSQL from reading the newest partition first for the newest-first list (an
ordered Append, which stops at the page's last row), and would rule out `DETACH ...
CONCURRENTLY`. So partitions are made `ahead` widths ahead of now by the workers' retention
loop (and by migration 0010_partitioned_jobs); an insert for a time no partition covers
fails, which only a loop stopped for `ahead` widths (or a clock that far off) can cause.

A partition is dropped once its whole range is before the cutoff, except its rows that
must stay (`KEEP`: unfinished, or changed since the cutoff, such as an old job an operator
retried). A partition without such rows is detached concurrently (writers never wait),
then dropped; rows that became ones to keep meanwhile are put back first. A partition with
a few is detached in one short transaction that locks the table and puts them back into a
new partition of their range (`_rehome`): no write to them can fall in between, so no
unfinished row (`waiting`, `queued` or `running`) is ever dropped. One with more than
`max_kept` waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from app.db.models import BackgroundJob
from app.jobs.lifecycle import TERMINAL_STATUSES, UNFINISHED_STATUSES, status_in
from app.ops.dropped_rows import forget_dropped
from app.ops.partition_ranges import (
    TABLE,
    Partition,
    boundary_at_or_before,
    gap_around,
)

if TYPE_CHECKING:
    from sqlalchemy import TextClause
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

DETACHED = "_detached"  # a partition detached to be dropped (a pass that died leaves it)
MAX_KEPT = 10_000  # rows a partition may keep and still be dropped (the rest put back)
LOCK_TIMEOUT = "2s"  # the swap's wait for the table lock (writers queue behind it)
DETACH_TIMEOUT = "60s"  # a concurrent detach's wait for older transactions to end

# The rows a dropped partition must not take with it.
KEEP = (
    f"({status_in(UNFINISHED_STATUSES)} OR ({status_in(TERMINAL_STATUSES)} "
    "AND updated_at >= :cutoff))"
)
_LIKE_THE_TABLE = f"(LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
_COLUMNS = ", ".join(column.name for column in BackgroundJob.__table__.columns)
_PARTITIONS = text(
    f"""
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = '{TABLE}'::regclass
    """  # noqa: S608 - constants only
)
_LEFT_BEHIND = text(
    f"""
    SELECT relname FROM pg_class
    WHERE relkind = 'r' AND NOT relispartition AND relnamespace = 'public'::regnamespace
      AND relname ~ '^{TABLE}_(p[0-9]{{8}}_[0-9]{{4}}|legacy)'
    """  # noqa: S608 - constants only
)
_LOCK = text(f"SELECT pg_advisory_lock(hashtext('{TABLE} partitions'))")
_UNLOCK = text(f"SELECT pg_advisory_unlock(hashtext('{TABLE} partitions'))")


@dataclass
class Dropped:
    """What a pass dropped: rows gone, partitions gone, partitions left for a later pass."""

    rows: int = 0
    partitions: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # too many rows to keep, or a busy table


class Partitions:
    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        *,
        width: timedelta,
        ahead: int,
        max_kept: int = MAX_KEPT,
    ) -> None:
        self._engine = engine
        self.width = width
        self.ahead = ahead
        self.max_kept = max_kept

    async def current(self, connection: AsyncConnection | None = None) -> list[Partition]:
        """The table's partitions, oldest first."""
        if connection is None:
            async with self._engine().connect() as fresh:
                return await self.current(fresh)
        found = [Partition.of(*row) for row in (await connection.execute(_PARTITIONS)).all()]
        return sorted(found, key=lambda p: p.end)

    async def ensure(self, now: datetime | None = None, since: datetime | None = None) -> list[str]:
        """Make the partitions missing from `since` (default: now) to `ahead` widths past
        now; returns their names."""
        now = now or datetime.now(UTC)
        until = boundary_at_or_before(now, self.width) + (self.ahead + 1) * self.width
        moment = boundary_at_or_before(since or now, self.width)
        existing, made = await self.current(), []
        while moment < until:
            covering = next((p for p in existing if p.covers(moment)), None)
            if covering is None:
                covering = gap_around(moment, existing, self.width)
                async with self._engine().begin() as connection:
                    await self._create(connection, covering)
                log.info("partition made", partition=covering.name, range=covering.bounds())
                existing.append(covering)
                made.append(covering.name)
            moment = covering.end
        return made

    async def drop_past(self, cutoff: datetime, max_partitions: int = 100) -> Dropped:
        """Drop the partitions whose whole range is before `cutoff`, oldest first, keeping
        their `KEEP` rows; at most `max_partitions` a pass (the others: `kept`)."""
        dropped = Dropped()
        async with self._engine().connect() as connection:
            leftovers = (await connection.execute(_LEFT_BEHIND)).scalars().all()
        for name in leftovers:  # detached by a pass that stopped before dropping them
            try:
                if not name.endswith(DETACHED):  # its name, free for a partition again
                    await self._autocommit(f"ALTER TABLE {name} RENAME TO {name}{DETACHED}")
                    name = f"{name}{DETACHED}"
                async with self._engine().begin() as connection:
                    kept = await self._rehome(connection, name, cutoff)
                dropped.rows += await self._count_and_drop(name) - kept
            except Exception as exc:  # the next pass tries again; the others go on
                log.warning("detached partition not dropped", table=name, error=str(exc))
        past = [p for p in await self.current() if p.end <= cutoff]
        dropped.kept += [p.name for p in past[max_partitions:]]
        for partition in past[:max_partitions]:
            try:
                rows = await self._drop(partition, cutoff)
            except Exception as exc:  # a lock not granted in time: the next pass tries again
                log.warning("partition not dropped", partition=partition.name, error=str(exc))
                rows = None
            if rows is None:
                dropped.kept.append(partition.name)
                continue
            dropped.rows += rows
            dropped.partitions.append(partition.name)
            await forget_dropped(self._engine, partition)
        return dropped

    async def _drop(self, partition: Partition, cutoff: datetime) -> int | None:
        """Drop one partition; the rows it took, or None when it has too many to keep."""
        detached = f"{partition.name}{DETACHED}"
        if partition.detach_pending:  # a concurrent detach that did not finish
            await self._autocommit(
                f"ALTER TABLE {TABLE} DETACH PARTITION {partition.name} FINALIZE"
            )
        else:
            keep = await self._count(partition.name, cutoff)
            if keep > self.max_kept:
                log.warning("partition kept", partition=partition.name, rows_to_keep=keep)
                return None
            if keep:  # detached and its rows put back in one transaction
                async with self._engine().begin() as connection:
                    await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                    await connection.execute(
                        text(f"ALTER TABLE {TABLE} DETACH PARTITION {partition.name}")
                    )
                    await connection.execute(
                        text(f"ALTER TABLE {partition.name} RENAME TO {detached}")
                    )
                    kept = await self._rehome(connection, detached, cutoff)
                return await self._count_and_drop(detached) - kept
            await self._autocommit(
                f"ALTER TABLE {TABLE} DETACH PARTITION {partition.name} CONCURRENTLY",
                lock_timeout=DETACH_TIMEOUT,
            )
        await self._autocommit(f"ALTER TABLE {partition.name} RENAME TO {detached}")
        # A write that made a row one to keep may have ended after the count above.
        async with self._engine().begin() as connection:
            kept = await self._rehome(connection, detached, cutoff)
        return await self._count_and_drop(detached) - kept

    async def _rehome(self, connection: AsyncConnection, detached: str, cutoff: datetime) -> int:
        """Move `detached`'s rows to keep into the table, each into the partition of its time,
        made for it (its aligned range, clipped to what no partition covers) if missing."""
        times = list(
            (
                await connection.execute(
                    text(f"SELECT created_at FROM {detached} WHERE {KEEP}"),  # noqa: S608
                    {"cutoff": cutoff},
                )
            ).scalars()
        )
        existing = await self.current(connection)
        for moment in sorted(set(times)):
            if not any(p.covers(moment) for p in existing):
                partition = gap_around(moment, existing, self.width)
                await self._create(connection, partition)
                existing.append(partition)
        # ON CONFLICT: a pass that died after putting them back left them in both places.
        await connection.execute(_copy_kept(detached), {"cutoff": cutoff})
        return len(times)

    async def _count_and_drop(self, detached: str) -> int:
        """The rows `detached` holds, then it is dropped."""
        async with self._engine().connect() as connection:
            rows = await connection.scalar(text(f"SELECT count(*) FROM {detached}"))  # noqa: S608
        await self._autocommit(f"DROP TABLE {detached}")
        return int(rows or 0)

    async def _count(self, name: str, cutoff: datetime) -> int:
        """The rows of `name` to keep (through its partial indexes)."""
        async with self._engine().connect() as connection:
            found = await connection.scalar(
                text(f"SELECT count(*) FROM {name} WHERE {KEEP}"),  # noqa: S608
                {"cutoff": cutoff},
            )
        return int(found or 0)

    async def _create(self, connection: AsyncConnection, partition: Partition) -> None:
        """A new, empty partition: attached (a lock of the table that lets reads and writes
        go on), not created as one (which would lock both out)."""
        await connection.execute(text(f"CREATE TABLE {partition.name} {_LIKE_THE_TABLE}"))
        await connection.execute(
            text(f"ALTER TABLE {TABLE} ATTACH PARTITION {partition.name} {partition.bounds()}")
        )

    async def _autocommit(self, statement: str, lock_timeout: str | None = None) -> None:
        async with self._engine().connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if lock_timeout is not None:
                await autocommit.execute(text(f"SET lock_timeout = '{lock_timeout}'"))
            try:
                await autocommit.execute(text(statement))
            except Exception:  # raised as it is: a RESET here would hide it behind its own
                await autocommit.invalidate()  # not back to the pool with that timeout set
                raise
            if lock_timeout is not None:
                await autocommit.execute(text("RESET lock_timeout"))

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One pass at a time across processes (the workers' loop, an admin's prune): a
        PostgreSQL advisory lock held on a connection of its own for the pass."""
        async with self._engine().connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(_LOCK)
            try:
                yield
            finally:
                await autocommit.execute(_UNLOCK)


def _copy_kept(source: str) -> TextClause:
    return text(
        f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT {_COLUMNS} FROM {source} WHERE {KEEP}"  # noqa: S608
        " ON CONFLICT DO NOTHING"
    )

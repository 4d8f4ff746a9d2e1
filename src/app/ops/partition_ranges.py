"""`background_jobs`'s partitions as ranges of `created_at`: their names, bounds, and where a
new one fits. No I/O (app/ops/partitions.py makes and drops them)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

TABLE = "background_jobs"
PREFIX = f"{TABLE}_p"
LEGACY = f"{TABLE}_legacy"  # the table as it was before migration 0010_partitioned_jobs
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST = datetime.min.replace(tzinfo=UTC)
_BOUND = re.compile(r"FROM \((?:'([^']+)'|MINVALUE)\) TO \('([^']+)'\)")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime | None  # None: MINVALUE (the migrated table: everything before `end`)
    end: datetime
    detach_pending: bool = False

    def bounds(self) -> str:
        start = "MINVALUE" if self.start is None else f"'{self.start.isoformat()}'"
        return f"FOR VALUES FROM ({start}) TO ('{self.end.isoformat()}')"

    def covers(self, moment: datetime) -> bool:
        return (self.start or FIRST) <= moment < self.end

    @classmethod
    def of(cls, name: str, bound: str, detach_pending: bool = False) -> Partition:
        """From the catalog: its name and `pg_get_expr(relpartbound, oid)`."""
        match = _BOUND.search(bound)
        if match is None:  # pragma: no cover - only range partitions are made
            raise ValueError(f"unexpected partition bound of {name}: {bound}")
        start = datetime.fromisoformat(match[1]) if match[1] else None
        return cls(name, start, datetime.fromisoformat(match[2]), detach_pending)


def is_partition(table_name: str) -> bool:
    """Whether `table_name` names one of `background_jobs`'s partitions (made at run time,
    so not in the models: Alembic's comparisons skip them)."""
    return table_name.startswith(PREFIX) or table_name == LEGACY


def partition_name(start: datetime) -> str:
    return f"{PREFIX}{start.astimezone(UTC):%Y%m%d_%H%M}"


def boundary_at_or_before(moment: datetime, width: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // width) * width


def gap_around(moment: datetime, existing: Iterable[Partition], width: timedelta) -> Partition:
    """A partition for `moment`, which none of `existing` covers: its aligned range of
    `width`, clipped to what no partition covers."""
    aligned = boundary_at_or_before(moment, width)
    others = list(existing)
    start = max([aligned] + [p.end for p in others if p.end <= moment])
    end = min([aligned + width] + [p.start or FIRST for p in others if (p.start or FIRST) > moment])
    return Partition(partition_name(start), start, end)

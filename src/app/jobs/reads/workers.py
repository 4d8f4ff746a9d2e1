"""The workers now: each live worker of the app's queues as its SAQ worker record describes it
(who it is, its last report, the jobs it runs), and the workers that stopped reporting while
rows were still `running` on them.

Live workers are SAQ's (`queue.info()["workers"]`: a record each worker rewrites every
`worker_info` interval, kept that long plus a second). What a worker runs is what it lists in
its record when it lists it, else the table's `running` rows that name it. A `running` row
whose worker has no record is on a lost worker: the reconciler retries or fails it after
WORKER_LOST_AFTER, and until then it is flagged here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from saq.queue import Queue
from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.lifecycle import JobStatus
from app.jobs.queue.identity import Identity, listed_jobs
from app.jobs.reads.queries import JOBS

# Running rows looked at, oldest first (the status index's running entries: the live workers'
# concurrency plus the lost workers' rows).
RUNNING_SCANNED = 5_000


@dataclass(frozen=True, slots=True)
class RunningJob:
    key: str  # SAQ's key
    job_id: str | None  # the row's, for a link
    task_name: str | None  # None: listed by its worker, its row not written yet
    started_at: datetime | None


@dataclass(frozen=True)
class LiveWorker:
    id: str
    queue: str
    identity: Identity
    stats: Mapping[str, Any]  # SAQ's: complete, failed, retried, aborted, uptime (ms)
    running: list[RunningJob]
    listed: bool  # True: the jobs it says it runs; False: the rows that name it


@dataclass(frozen=True)
class LostWorker:
    id: str
    queue: str
    running: list[RunningJob]  # rows still `running` on it


@dataclass
class WorkersNow:
    workers: list[LiveWorker] = field(default_factory=list)
    lost: list[LostWorker] = field(default_factory=list)
    # More running rows than RUNNING_SCANNED: some jobs (and lost workers) may be missing.
    scan_capped: bool = False


class Workers:
    """Reads the workers of the app's queues (Redis) and the rows running on them (the table)."""

    def __init__(self, sessions: Callable[[], AsyncSession]) -> None:
        self._sessions = sessions

    async def now(self, queues: Iterable[Queue]) -> WorkersNow:
        """The queues' live workers and lost ones; Redis errors propagate (the caller's 503)."""
        return await _workers_now(queues, self._sessions)


async def _workers_now(queues: Iterable[Queue], sessions: Callable[[], AsyncSession]) -> WorkersNow:
    records: list[tuple[str, str, Mapping[str, Any]]] = []
    names = []
    for queue in queues:
        names.append(queue.name)
        info = await queue.info()
        records.extend((queue.name, str(id_), record) for id_, record in info["workers"].items())
    rows = await _running_rows(sessions, names)
    by_worker: dict[str, list[RowMapping]] = defaultdict(list)
    for row in rows:
        by_worker[row["worker_id"]].append(row)
    by_job_id = {str(row["job_id"]): row for row in rows}

    found = WorkersNow(scan_capped=len(rows) >= RUNNING_SCANNED)
    for queue_name, worker_id, record in sorted(records, key=lambda r: (r[0], r[1])):
        listed = listed_jobs(record)
        if listed is None:
            running = [_from_row(row) for row in by_worker.get(worker_id, [])]
        else:
            running = [
                RunningJob(
                    key=job.key,
                    job_id=job.row_id,
                    task_name=_task_of(by_job_id.get(job.row_id or "")),
                    started_at=job.started_at,
                )
                for job in listed
            ]
        found.workers.append(
            LiveWorker(
                id=worker_id,
                queue=queue_name,
                identity=Identity.of(record),
                stats=record.get("stats") or {},
                running=running,
                listed=listed is not None,
            )
        )
    live = {worker_id for _, worker_id, _ in records}
    for worker_id, held in sorted(by_worker.items()):
        if worker_id not in live:
            running = [_from_row(row) for row in held]
            found.lost.append(LostWorker(worker_id, held[0]["queue"], running))
    return found


async def _running_rows(
    sessions: Callable[[], AsyncSession], queue_names: list[str]
) -> list[RowMapping]:
    c = JOBS.c
    statement = (
        select(c.job_id, c.job_key, c.task_name, c.queue, c.worker_id, c.started_at)
        .where(
            c.status == JobStatus.RUNNING.value,
            c.queue.in_(queue_names),
            c.worker_id.is_not(None),
        )
        .order_by(c.created_at, c.id)
        .limit(RUNNING_SCANNED)
    )
    async with sessions() as session:
        return list((await session.execute(statement)).mappings())


def _from_row(row: RowMapping) -> RunningJob:
    return RunningJob(
        key=row["job_key"] or str(row["job_id"]),
        job_id=str(row["job_id"]),
        task_name=row["task_name"],
        started_at=row["started_at"],
    )


def _task_of(row: RowMapping | None) -> str | None:
    return row["task_name"] if row is not None else None

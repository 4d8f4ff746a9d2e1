"""What a scrape of `/metrics` says about jobs, gathered when the scrape comes.

- counters and histograms every process (API and workers, on any machine) added to Redis
  (`app.jobs.metrics`): enqueued, finished by status, attempt failures by exception class,
  run and wait times; the maintenance loops' passes and their last success;
- from SAQ: the queue's depth by state, its live workers, the age of the job that has
  waited longest at the head of the queue;
- from the table: rows by status, counted at most once every `rows_ttl` seconds per process
  (a scrape in between gets the last count; a stale one is refreshed in the background);
  and the running rows of workers SAQ no longer lists as live, counted at each scrape up to
  `lost_cap` (the scan reads the running rows only: those of live workers are at most
  their concurrency).

A source that does not answer leaves its metrics out and sets `bgjobs_source_up` to 0, so
the scrape itself still succeeds.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from saq.utils import now
from sqlalchemy import text

from app.jobs.lifecycle import JobStatus
from app.jobs.metrics import (
    ATTEMPT_FAILURES,
    BUCKETS,
    ENQUEUED,
    FAILED,
    FINISHED,
    HISTOGRAMS,
    LAST_SUCCESS,
    LOOPS,
    PASSES,
    SUCCEEDED,
    JobMetrics,
    Sample,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.jobs.queue.tracked import TrackedQueue

log = structlog.get_logger(__name__)

PREFIX = "bgjobs"
ROWS_TTL = 15.0  # seconds between two counts of the table's rows by status, per process
LOST_CAP = 10_000  # running rows of lost workers counted at most, per scrape
_ROWS_BY_STATUS = text("SELECT status, count(*) FROM background_jobs GROUP BY status")
# A row without a worker counts too: no live worker will report its outcome. In the status
# index's order: with the app's planner settings (no sorts) the walk is that index's running
# entries only, never the queued backlog that the index of unfinished rows also holds.
LOST_WORKER_JOBS = text(
    f"""
    SELECT count(*) FROM (
        SELECT 1 FROM background_jobs
        WHERE status = '{JobStatus.RUNNING.value}' AND queue = :queue
          AND NOT (COALESCE(worker_id, '') = ANY(CAST(:live AS text[])))
        ORDER BY created_at
        LIMIT :cap
    ) AS lost
    """  # noqa: S608 - the lifecycle's status only
)
_COUNTERS = {
    ENQUEUED: ("enqueued", "Jobs put on the queue.", ["task"]),
    FINISHED: ("finished", "Jobs that ended, by final status.", ["task", "status"]),
    ATTEMPT_FAILURES: (
        "attempt_failures",
        "Attempts that ended in an error, by the error's class (or SAQ's reason).",
        ["task", "exception"],
    ),
    PASSES: (
        "maintenance_passes",
        "Passes the workers made of a maintenance loop, by outcome.",
        ["loop", "outcome"],
    ),
}
_HISTOGRAMS = {
    "run_seconds": "Seconds from the start of a job's last attempt to its end.",
    "wait_seconds": "Seconds from a job's enqueue (or due time) to its first attempt's start.",
}


class JobsCollector:
    def __init__(
        self,
        metrics: JobMetrics,
        queue: TrackedQueue,
        sessions: Callable[[], AsyncSession],
        *,
        rows_ttl: float = ROWS_TTL,
        lost_cap: int = LOST_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._queue = queue
        self._sessions = sessions
        self._rows_ttl = rows_ttl
        self._lost_cap = lost_cap
        self._clock = clock
        self._rows: dict[str, int] | None = None
        self._rows_at = float("-inf")
        self._refresh: asyncio.Task[None] | None = None

    async def collect(self) -> list[Metric]:
        """Every job metric, read now (the row counts: cached)."""
        families: list[Metric] = []
        up = GaugeMetricFamily(
            f"{PREFIX}_source_up", "1 if the scrape could read the source.", labels=["source"]
        )
        live_workers: list[str] | None = None  # unknown without Redis
        try:
            from_redis, live_workers = await self._from_redis()
            families += from_redis
            up.add_metric(["redis"], 1)
        except Exception as exc:
            log.warning("metrics: redis unavailable", error=f"{type(exc).__name__}: {exc}")
            up.add_metric(["redis"], 0)
        try:
            from_table = [await self._rows_by_status()]
            if live_workers is not None:
                from_table.append(await self._lost_worker_jobs(live_workers))
            families += from_table
            up.add_metric(["database"], 1)
        except Exception as exc:
            log.warning("metrics: database unavailable", error=f"{type(exc).__name__}: {exc}")
            up.add_metric(["database"], 0)
        return [*families, up]

    async def _from_redis(self) -> tuple[list[Metric], list[str]]:
        """The families read from Redis, and the ids of the queue's live workers."""
        queue_name = self._queue.name
        await self._metrics.publish()  # this process's own counts are in the answer too
        samples = await self._metrics.read()
        info = await self._queue.info()
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Jobs in the queue by state.", labels=["queue", "state"]
        )
        for state in ("queued", "active", "scheduled"):
            depth.add_metric([queue_name, state], info[state])
        workers = GaugeMetricFamily(
            f"{PREFIX}_live_workers", "Workers reporting to the queue.", labels=["queue"]
        )
        workers.add_metric([queue_name], len(info["workers"]))
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_queued_age_seconds",
            "Seconds the job at the head of the queue has waited (0 when none waits).",
            labels=["queue"],
        )
        oldest.add_metric([queue_name], await self._oldest_waiting_seconds())
        families = [
            *counter_families(queue_name, samples),
            last_success_family(queue_name, samples),
        ]
        return [*families, depth, workers, oldest], list(info["workers"])

    async def _lost_worker_jobs(self, live_workers: list[str]) -> Metric:
        params = {"queue": self._queue.name, "live": live_workers, "cap": self._lost_cap}
        async with self._sessions() as session:
            lost = (await session.execute(LOST_WORKER_JOBS, params)).scalar_one()
        family = GaugeMetricFamily(
            f"{PREFIX}_lost_worker_jobs",
            "Running rows whose worker no longer reports to the queue "
            f"(at most {self._lost_cap} counted).",
            labels=["queue"],
        )
        family.add_metric([self._queue.name], lost)
        return family

    async def _oldest_waiting_seconds(self) -> float:
        """How long the next job a worker would take has been ready to run."""
        queue = self._queue
        head = await queue.redis.lindex(queue.namespace("queued"), 0)  # type: ignore[misc]
        job = queue.deserialize(await queue.redis.get(head)) if head is not None else None
        if job is None:
            return 0.0
        ready_ms = max(job.queued, job.touched, job.scheduled * 1000)  # SAQ: ms and seconds
        return max(0.0, (now() - ready_ms) / 1000)

    async def _rows_by_status(self) -> Metric:
        if self._rows is None:
            await self._count_rows()
        elif self._clock() - self._rows_at >= self._rows_ttl and self._refresh is None:
            self._refresh = asyncio.create_task(self._count_rows())
            self._refresh.add_done_callback(self._refreshed)
        rows = GaugeMetricFamily(
            f"{PREFIX}_rows",
            f"Rows of background_jobs by status (counted at most every {self._rows_ttl:g} s).",
            labels=["status"],
        )
        counted = self._rows or {}
        for status in JobStatus:
            rows.add_metric([status.value], counted.get(status.value, 0))
        return rows

    async def _count_rows(self) -> None:
        async with self._sessions() as session:
            result = await session.execute(_ROWS_BY_STATUS)
        self._rows = {str(status): int(count) for status, count in result.all()}
        self._rows_at = self._clock()

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refresh = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("metrics: rows not counted", error=f"{type(exc).__name__}: {exc}")


def counter_families(queue: str, samples: dict[Sample, float]) -> list[Metric]:
    # Every loop's passes, 0 until counted: `increase()` then sees a loop's first failure.
    samples = {
        **{(PASSES, loop, outcome): 0.0 for loop in LOOPS for outcome in (SUCCEEDED, FAILED)},
        **samples,
    }
    counters = {
        key: CounterMetricFamily(f"{PREFIX}_{name}", text_, labels=["queue", *labels])
        for key, (name, text_, labels) in _COUNTERS.items()
    }
    histograms: dict[str, dict[str, Any]] = {
        name: defaultdict(lambda: {"buckets": [0.0] * (len(BUCKETS) + 1), "sum": 0.0})
        for name in HISTOGRAMS
    }
    for sample, value in sorted(samples.items()):
        metric, *labels = sample
        if metric == LAST_SUCCESS:
            continue  # a gauge: last_success_family
        if metric in counters:
            counters[metric].add_metric([queue, *labels], value)
            continue
        name, _, part = metric.rpartition("_")
        if name not in histograms or not labels:
            continue  # written by a newer version of this code: not ours to read
        task = histograms[name][labels[0]]
        if part == "bucket" and len(labels) == 2:
            task["buckets"][int(labels[1])] += value
        elif part == "sum":
            task["sum"] += value
    families: list[Metric] = list(counters.values())
    for name, by_task in histograms.items():
        family = HistogramMetricFamily(
            f"{PREFIX}_{name}", _HISTOGRAMS[name], labels=["queue", "task"]
        )
        for task_name, observed in sorted(by_task.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], observed["buckets"], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([queue, task_name], buckets, observed["sum"])
        families.append(family)
    return families


def last_success_family(queue: str, samples: dict[Sample, float]) -> Metric:
    """When each maintenance loop last made a pass that succeeded (absent: not since Redis
    was last emptied)."""
    family = GaugeMetricFamily(
        f"{PREFIX}_maintenance_last_success_timestamp_seconds",
        "Unix time of the last successful pass of a maintenance loop, in any worker.",
        labels=["queue", "loop"],
    )
    for (metric, *labels), at in sorted(samples.items()):
        if metric == LAST_SUCCESS and len(labels) == 1:
            family.add_metric([queue, labels[0]], at)
    return family

"""Per task, what happened to the jobs created in a recent window: counts by status, the
failure rate, run and wait times (`GET /api/v1/jobs/stats`, the overview).

Two statements whose cost does not grow with the table: the ended jobs' counts from
`job_stats` (summed per minute for windows up to an hour, per hour for longer ones, so a
`7d` window reads 169 hours of counts per task where `1h` reads 61 minutes), and the
unfinished jobs created in the window, counted live through the partial index of
unfinished rows of the window's partitions (as many as are queued or running). A window
starts at the minute (`5m`, `15m`, `1h`) or at the hour (`6h`, `24h`, `7d`) before
`now - window`. Percentiles come from the duration buckets (app/jobs/histogram.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import TextClause, text

from app.jobs.histogram import BUCKETS, bucket_sql, percentile
from app.jobs.lifecycle import UNFINISHED_STATUSES, JobStatus, status_in
from app.jobs.record.counting import ALL_PROJECTS, ENDED, HOUR, MINUTE, RUN, WAIT

# The windows `GET /api/v1/jobs/stats` offers, by name, in minutes.
WINDOWS = {"5m": 5, "15m": 15, "1h": 60, "6h": 360, "24h": 1440, "7d": 10080}
_BY_MINUTE_UP_TO = 60  # minutes: longer windows are read by the hour

_ENDED = text(
    """
    SELECT task_name, measure, bucket, sum(n) AS n FROM job_stats
    WHERE kind = :kind AND project_id = :project_id AND at >= :since
    GROUP BY task_name, measure, bucket
    """
)
_WAIT = "EXTRACT(EPOCH FROM started_at - created_at)::float8"
_UNFINISHED = """
    SELECT task_name, status, {wait_bucket} AS wait_bucket, count(*) AS n
    FROM background_jobs
    WHERE {unfinished} AND created_at >= :since {project}
    GROUP BY task_name, status, wait_bucket
"""
_UNFINISHED_ALL = text(
    _UNFINISHED.format(
        wait_bucket=bucket_sql(_WAIT), unfinished=status_in(UNFINISHED_STATUSES), project=""
    )
)
_UNFINISHED_ONE = text(
    _UNFINISHED.format(
        wait_bucket=bucket_sql(_WAIT),
        unfinished=status_in(UNFINISHED_STATUSES),
        project="AND project_id = :project_id",
    )
)
# The overview's chart: per task and minute since `since`, the jobs that ended then.
_COMPLETE, _FAILED = JobStatus.COMPLETE.value, JobStatus.FAILED.value
PER_MINUTE = text(
    f"""
    SELECT task_name, at AS minute,
        CAST(coalesce(sum(n) FILTER (WHERE measure = '{_COMPLETE}'), 0) AS bigint) AS complete,
        CAST(coalesce(sum(n) FILTER (WHERE measure = '{_FAILED}'), 0) AS bigint) AS failed
    FROM job_stats
    WHERE kind = '{ENDED}' AND project_id = '{ALL_PROJECTS}' AND at >= :since
      AND measure IN ('{_COMPLETE}', '{_FAILED}')
    GROUP BY task_name, at
    HAVING sum(n) > 0
    ORDER BY task_name, at
    """  # noqa: S608 - built from constants only
)


def window_start(window: str, now: datetime) -> tuple[str, datetime]:
    """The kind of counts a window reads, and the moment it starts."""
    minutes = WINDOWS[window]
    start = now - timedelta(minutes=minutes)
    if minutes <= _BY_MINUTE_UP_TO:
        return MINUTE, start.replace(second=0, microsecond=0)
    return HOUR, start.replace(minute=0, second=0, microsecond=0)


def stats_statements(
    kind: str, since: datetime, project_id: UUID | None
) -> tuple[TextClause, TextClause]:
    """The ended jobs' counts and the unfinished jobs created since `since`."""
    project = {"project_id": project_id or ALL_PROJECTS}
    ended = _ENDED.bindparams(kind=kind, since=since, **project)
    if project_id is None:
        return ended, _UNFINISHED_ALL.bindparams(since=since)
    return ended, _UNFINISHED_ONE.bindparams(since=since, project_id=project_id)


@dataclass
class _Task:
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in JobStatus})
    run: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    wait: list[int] = field(default_factory=lambda: [0] * BUCKETS)


def task_stats(ended: list[Any], unfinished: list[Any]) -> list[dict[str, Any]]:
    """Per task (by name), the row the stats answer is made of: `total`, each status's count,
    `run_seconds` and `wait_seconds` as [p50, p95] (None when no job qualifies)."""
    tasks: dict[str, _Task] = defaultdict(_Task)
    for task_name, measure, bucket, n in ended:
        task = tasks[task_name]
        if measure == RUN:
            task.run[bucket] += int(n)
        elif measure == WAIT:
            task.wait[bucket] += int(n)
        else:
            task.counts[measure] += int(n)
    for task_name, status, wait_bucket, n in unfinished:
        task = tasks[task_name]
        task.counts[status] += int(n)
        if wait_bucket is not None:  # started (and waiting for its next attempt, or running)
            task.wait[wait_bucket] += int(n)
    return [
        {
            "task_name": name,
            "total": sum(task.counts.values()),
            **task.counts,
            "run_seconds": _percentiles(task.run),
            "wait_seconds": _percentiles(task.wait),
        }
        for name, task in sorted(tasks.items())
        if sum(task.counts.values())
    ]


def _percentiles(counts: list[int]) -> list[float] | None:
    p50, p95 = percentile(counts, 0.5), percentile(counts, 0.95)
    return None if p50 is None or p95 is None else [p50, p95]


def failure_rate(failed: int, ended: int) -> float | None:
    """The share of ended jobs (complete, failed or aborted) that failed; None: none ended."""
    return round(failed / ended, 4) if ended else None

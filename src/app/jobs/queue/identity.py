"""Who a worker process is, as it tells the others: the `metadata` of its SAQ worker record.

SAQ keeps one record per live worker (`queue.info()["workers"]`: its stats, and the metadata
the worker was given). A tracked worker fills that metadata in when it starts, in its own
process (`workers run --workers N` forks its processes after the app is built): its host, pid,
queue, concurrency and start. Its last report is `started` + SAQ's `uptime` stat, both on the
worker's own clock (SAQ counts `uptime` from the same queue start).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.jobs.queue.running import JOBS, LISTED_AT

# The metadata fields a tracked worker writes.
HOST = "host"
PID = "pid"
QUEUE = "queue"
CONCURRENCY = "concurrency"
STARTED = "started"  # epoch ms: when the process built its queue (SAQ's `uptime` counts from it)


def this_process(queue_name: str, concurrency: int, started_ms: int) -> dict[str, Any]:
    """The metadata of a worker of this process (called in the process that runs it)."""
    return {
        HOST: socket.gethostname(),
        PID: os.getpid(),
        QUEUE: queue_name,
        CONCURRENCY: concurrency,
        STARTED: started_ms,
    }


@dataclass(frozen=True, slots=True)
class Identity:
    """What a worker record says about its worker; None where it says nothing (a plain SAQ
    worker, or one that has not started yet, gives no metadata)."""

    host: str | None
    pid: int | None
    concurrency: int | None
    started_at: datetime | None
    reported_at: datetime | None  # its last report, on its own clock

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> Identity:
        metadata = _mapping(info.get("metadata"))
        stats = _mapping(info.get("stats"))
        started = _number(metadata.get(STARTED))
        uptime = _number(stats.get("uptime"))
        reported = _number(info.get(LISTED_AT))
        if reported is None and started is not None and uptime is not None:
            reported = started + uptime
        host = metadata.get(HOST)
        return cls(
            host=host if isinstance(host, str) else None,
            pid=_integer(metadata.get(PID)),
            concurrency=_integer(metadata.get(CONCURRENCY)),
            started_at=_moment(started),
            reported_at=_moment(reported),
        )


@dataclass(frozen=True, slots=True)
class ListedJob:
    """A job a worker says it runs: SAQ's key, the row's `job_id` and its start (epoch ms)."""

    key: str
    row_id: str | None
    started_at: datetime | None


def listed_jobs(info: Mapping[str, Any]) -> list[ListedJob] | None:
    """The jobs a worker record lists; None for a worker that lists none (a plain SAQ worker)."""
    jobs = info.get(JOBS)
    if not isinstance(jobs, list) or _number(info.get(LISTED_AT)) is None:
        return None
    listed = []
    for job in jobs:
        if isinstance(job, Mapping) and isinstance(job.get("key"), str):
            row_id = job.get("row_id")
            listed.append(
                ListedJob(
                    key=job["key"],
                    row_id=str(row_id) if row_id else None,
                    started_at=_moment(_number(job.get("started")) or None),
                )
            )
    return listed


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _moment(epoch_ms: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms is not None else None

"""Job counters every process keeps in memory and adds to Redis, so that one scrape of any
API process sees the jobs of every process, workers on other machines included.

Counting is a dict increment on the hot path (the enqueue, the recorder's flush). Every
`PUBLISH_INTERVAL` seconds, and when the process stops, what was counted since the last
time is added to one Redis hash per queue in one MULTI/EXEC; the scrape reads that hash
(`read`). Counters in Redis only grow; a flushed Redis starts them again at zero, which
Prometheus reads as a counter reset. The labels are the task, the queue, the final status
and the exception's class: never a job, user or project id.

The workers' maintenance loops (the reconciler, retention) count their passes the same way,
and the time of their last successful pass goes to a sorted set beside the hash, where the
latest of every process's is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from app.jobs.lifecycle import TERMINAL_STATUSES, JobStatus, Transition

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger(__name__)

PUBLISH_INTERVAL = 5.0  # seconds; how far a scrape may trail the processes' own counts
# Upper bounds (seconds) of the run-time and wait-time histograms' buckets.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Exception classes come from task code: past this many in one process, the rest are "other".
MAX_EXCEPTION_CLASSES = 50
_CLASS_NAME = re.compile(r"[A-Za-z_][\w .-]{0,63}")

ENQUEUED = "enqueued"  # (task)
FINISHED = "finished"  # (task, status)
ATTEMPT_FAILURES = "attempt_failures"  # (task, exception)
RUN_SECONDS = "run_seconds"  # histogram (task): a final attempt's start to its end
WAIT_SECONDS = "wait_seconds"  # histogram (task): enqueued (or due) to the first start
HISTOGRAMS = (RUN_SECONDS, WAIT_SECONDS)
# The workers' maintenance loops: one pass at a time across the workers (a Redis lock).
RECONCILER = "reconciler"
RETENTION = "retention"
LOOPS = (RECONCILER, RETENTION)
SUCCEEDED, FAILED = "succeeded", "failed"
PASSES = "maintenance_passes"  # (loop, SUCCEEDED | FAILED): passes a process made
LAST_SUCCESS = "maintenance_last_success"  # (loop): Unix time, read from the sorted set

Sample = tuple[str, ...]  # (metric, *labels); a histogram's are `<name>_bucket`, `<name>_sum`


def exception_class(error: str) -> str:
    """The class an attempt's error names ("ValueError: ..." -> "ValueError"), or SAQ's and
    the reconciler's reason ("swept: ...", "worker lost: ...") when it names none."""
    head = error.partition(":")[0].strip()
    return head if _CLASS_NAME.fullmatch(head) else "other"


# Held here: a caller that patches `asyncio.sleep` for its own loop (SAQ's own tests do) must
# not turn this loop into a busy one.
_sleep = asyncio.sleep


class JobMetrics:
    """One process's job counts since they were last added to Redis."""

    def __init__(
        self, redis: Redis, queue_name: str, *, publish_interval: float = PUBLISH_INTERVAL
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.key = f"saq:{queue_name}:metrics"
        self.successes_key = f"saq:{queue_name}:metrics:last-success"  # loop -> Unix time
        self._interval = publish_interval
        self._counts: defaultdict[Sample, float] = defaultdict(float)
        self._succeeded: dict[str, float] = {}  # loop -> when its last pass here succeeded
        self._classes: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # Counting: no I/O.

    def enqueued(self, task: str, count: int = 1) -> None:
        self._counts[(ENQUEUED, task)] += count
        self._start()

    def started(self, task: str, wait_seconds: float) -> None:
        """A job's first attempt started `wait_seconds` after it was enqueued (or due)."""
        self._observe(WAIT_SECONDS, task, wait_seconds)
        self._start()

    def applied(self, transitions: Iterable[Transition]) -> None:
        """Transitions the recorder wrote to their rows (late or repeated ones are not)."""
        counts = self._counts
        for transition in transitions:
            status = transition.status
            if transition.error is not None and status in (JobStatus.QUEUED, JobStatus.FAILED):
                counts[(ATTEMPT_FAILURES, transition.task, self._class_of(transition.error))] += 1
            if status in TERMINAL_STATUSES:
                counts[(FINISHED, transition.task, status.value)] += 1
                if transition.started_at is not None and transition.completed_at is not None:
                    elapsed = transition.completed_at - transition.started_at
                    self._observe(RUN_SECONDS, transition.task, elapsed.total_seconds())
        self._start()

    def pass_made(self, loop: str, *, succeeded: bool) -> None:
        """This process made a pass of a maintenance loop (`RECONCILER`, `RETENTION`)."""
        self._counts[(PASSES, loop, SUCCEEDED if succeeded else FAILED)] += 1
        if succeeded:
            self._succeeded[loop] = time.time()
        self._start()

    def _observe(self, histogram: str, task: str, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        bucket = bisect_left(BUCKETS, seconds)  # len(BUCKETS): only +Inf holds it
        counts = self._counts
        counts[(f"{histogram}_bucket", task, str(bucket))] += 1
        counts[(f"{histogram}_sum", task)] += seconds  # the count: the buckets' total

    def _class_of(self, error: str) -> str:
        name = exception_class(error)
        if name not in self._classes:
            if len(self._classes) >= MAX_EXCEPTION_CLASSES:
                return "other"
            self._classes.add(name)
        return name

    # Publishing: the process's counts added to Redis.

    def _start(self) -> None:
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: published at close
                self._task = asyncio.get_running_loop().create_task(self._run(), name="job-metrics")

    async def _run(self) -> None:
        while True:
            await _sleep(self._interval)
            try:
                await self.publish()
            except Exception as exc:  # Redis down: the counts wait for the next try
                log.warning("could not publish job metrics", error=f"{type(exc).__name__}: {exc}")

    async def publish(self) -> None:
        """Add what was counted since the last call to Redis (kept for the next call if
        Redis does not take it)."""
        if not self._counts and not self._succeeded:
            return
        counts, self._counts = self._counts, defaultdict(float)
        succeeded, self._succeeded = self._succeeded, {}
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for sample, value in counts.items():
                    field = json.dumps(sample)
                    if sample[0].endswith("_sum"):
                        pipe.hincrbyfloat(self.key, field, value)
                    else:  # counts stay integers in Redis
                        pipe.hincrby(self.key, field, int(value))
                if succeeded:  # GT: another process's later success is never moved back
                    pipe.zadd(self.successes_key, succeeded, gt=True)
                await pipe.execute()
        except BaseException:
            for sample, value in counts.items():
                self._counts[sample] += value
            for loop, at in succeeded.items():
                self._succeeded[loop] = max(at, self._succeeded.get(loop, at))
            raise

    async def close(self) -> None:
        """Stop publishing; what is left goes to Redis now if it answers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.publish(), 2.0)
        except Exception as exc:
            log.warning("job metrics not published at shutdown", error=f"{type(exc).__name__}")

    # Reading: what every process has published.

    async def read(self) -> dict[Sample, float]:
        """Every counter of this queue in Redis, and each loop's last success
        (`(LAST_SUCCESS, loop)`: Unix time)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key)
            pipe.zrange(self.successes_key, 0, -1, withscores=True)
            raw, successes = await pipe.execute()
        samples: dict[Sample, float] = {
            tuple(json.loads(field)): float(value) for field, value in raw.items()
        }
        for loop, at in successes:
            samples[(LAST_SUCCESS, loop.decode() if isinstance(loop, bytes) else loop)] = at
        return samples

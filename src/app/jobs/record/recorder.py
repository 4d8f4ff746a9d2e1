"""Lifecycle writes off the hot path: transitions are collected and flushed in batches.

The queue reports a transition by appending it to a list (no I/O). One background task
flushes what has gathered as a single guarded UPDATE, `flush_interval` after the first event
of an idle period, so a row trails Redis by milliseconds. Under load it writes at most once
per `busy_flush_interval`: batches grow with the load instead of the number of writes.
When PostgreSQL is down the batch is kept and retried with backoff, so jobs keep running
and the rows are true once it is back. What a killed process still held is repaired by
the reconciler from Redis.

A row that ended with children waiting for it (`has_dependents`) has them released (put on
the queue through `release`, in this process) or aborted right after its batch is written;
the end of a job enqueued as a parent (`Transition.urgent`) is written without waiting for
the gather interval, so a chain of jobs moves at the speed of its round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

import structlog

from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.record.dependencies import settle_children
from app.jobs.record.events import JobEvent
from app.jobs.record.log_lines import Line, write_lines
from app.jobs.record.progress import ProgressUpdate, apply_progress
from app.jobs.record.statements import write_transitions

if TYPE_CHECKING:
    from app.db.connection import Connection
    from app.jobs.metrics import JobMetrics
    from app.jobs.record.events import EventPublisher
    from app.jobs.record.settled import ReleasedJob, Settled

log = structlog.get_logger(__name__)

_FIRST_BACKOFF = 0.05


class LifecycleRecorder:
    def __init__(
        self,
        connection: Connection,
        *,
        flush_interval: float = 0.002,
        busy_flush_interval: float = 0.010,
        max_batch: int = 1000,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: JobMetrics | None = None,
        events: EventPublisher | None = None,
    ) -> None:
        self._connection = connection  # one round trip per batch, no session; closed with us
        self._flush_interval = flush_interval
        self._busy_flush_interval = busy_flush_interval
        self._max_batch = max_batch
        self._max_backoff = max_backoff
        self._clock = clock  # with `sleep`, what unit tests replace to follow the cadence
        self._sleep = sleep
        self._metrics = metrics  # counts what the rows took: finished, failed, run time
        self._last_flush = float("-inf")
        self.events = events  # what each batch changed, for the API's event streams
        self._pending: list[Transition] = []
        self._progress: dict[UUID, ProgressUpdate] = {}  # each job's latest only
        self._ended_parents: dict[UUID, JobStatus] = {}  # written; children to settle
        # Puts released children on the queue (the outbox's `enqueue_recorded`).
        self.release: Callable[[Sequence[ReleasedJob]], Awaitable[object]] | None = None
        self._urgent = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._progress) + len(self._ended_parents)

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="lifecycle-recorder")

    def record(self, transition: Transition) -> None:
        self._pending.append(transition)
        if transition.urgent:
            self._urgent.set()
        self._idle.clear()
        self._wake.set()
        self.start()  # a queue that reports before it connected still gets its rows written

    def record_progress(self, update: ProgressUpdate) -> None:
        """A running job's progress; a later update of the same job replaces it until written."""
        self._progress[update.job_id] = update
        self._idle.clear()
        self._wake.set()
        self.start()

    async def flushed(self) -> None:
        """Wait until everything recorded so far is written."""
        await self._idle.wait()

    async def close(self, grace: float = 10.0) -> None:
        """Flush what is pending (for at most `grace` seconds), stop, and close the connection."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self.flushed(), grace)
            except TimeoutError:
                log.error("lifecycle writes left unflushed at shutdown", count=self.pending)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._connection.close()
        if self.events is not None:
            await self.events.close()

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            await self._wake.wait()
            if not self._closing:
                await self._pause(self._flush_interval)  # let a batch gather
            self._wake.clear()
            while self._pending or self._progress or self._ended_parents:
                if not self._closing:  # events came in during the last write: the load is on
                    next_flush = self._last_flush + self._busy_flush_interval
                    await self._pause(max(0.0, next_flush - self._clock()))
                self._last_flush = self._clock()
                try:
                    await self._write()
                except Exception as exc:
                    log.warning(
                        "could not write job lifecycle, will retry",
                        pending=self.pending,
                        retry_in_s=backoff,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                backoff = _FIRST_BACKOFF
            if not self._pending and not self._progress and not self._ended_parents:
                self._idle.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if an urgent transition comes (or came) meanwhile."""
        if self._urgent.is_set() or seconds <= 0:
            if seconds <= 0:
                await self._sleep(0)
            return
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        urgent = asyncio.ensure_future(self._urgent.wait())
        try:
            await asyncio.wait((sleeping, urgent), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            urgent.cancel()

    async def _write(self) -> None:
        """One batch of transitions, then the progress gathered so far: a statement each."""
        self._urgent.clear()  # what is pending is written now
        batch = self._pending[: self._max_batch]
        if batch:
            written = await write_transitions(self._connection.execute, batch)
            del self._pending[: len(batch)]
            self._ended_parents.update(written.ended_parents)
            _log_transitions(batch, written.applied)
            if self._metrics is not None:
                self._metrics.applied(written.applied)
            self._publish(
                JobEvent.of_transition(t, written.rows[t.job_id]) for t in written.applied
            )
        if self._ended_parents:
            await self._settle_children()
        if self._progress:
            updates, self._progress = self._progress, {}
            try:
                moved = await apply_progress(self._connection.execute, list(updates.values()))
            except BaseException:
                self._progress = {**updates, **self._progress}  # newer ones win
                raise
            self._publish(JobEvent.of_progress(update, row) for update, row in moved)

    async def _settle_children(self) -> None:
        """Release or abort the children of the rows written as ended (kept until done: the
        statements are safe to send again)."""
        ended = dict(self._ended_parents)
        settled = await settle_children(self._connection.execute, ended)
        for job_id in ended:
            del self._ended_parents[job_id]
        await announce_then_release(settled, self.events, self.release)

    def _publish(self, events: Iterable[JobEvent]) -> None:
        if self.events is not None:
            self.events.publish(events)


async def announce_then_release(
    settled: Settled,
    events: EventPublisher | None,
    release: Callable[[Sequence[ReleasedJob]], Awaitable[object]] | None,
) -> None:
    """The events of the rows settling children moved, then the released jobs put on the
    queue (`release`, the outbox's: a job Redis did not take stays queued): a stream shows a
    child's `queued` before its run's `running`."""
    if settled.moved and events is not None:
        await events.publish_now([JobEvent.of_child(child) for child in settled.moved])
    if settled.released and release is not None:
        await release(settled.released)


def _log_transitions(batch: list[Transition], applied: list[Transition]) -> None:
    """One readable line per job start and end, written once the row says so."""
    took_effect = {id(t) for t in applied}
    lines: list[Line] = []
    for transition in batch:
        fields: dict[str, object] = {
            "job_id": str(transition.job_id),
            "task": transition.task,
            "attempt": transition.attempt,
        }
        if id(transition) not in took_effect:
            # A late or repeated event (e.g. a job delivered twice): recorded here, not applied.
            fields["status"] = transition.status.value
            lines.append(("warning", "job event ignored", fields))
        elif transition.status is JobStatus.RUNNING:
            fields["worker_id"] = transition.worker_id
            lines.append(("info", "job started", fields))
        elif transition.new_row is not None and transition.attempt == 0:
            # A job the outbox did not make, now with its row (cron, scheduled, own key).
            new_row = transition.new_row
            fields.update(key=new_row.job_key, cron=new_row.cron)
            lines.append(("info", "job first seen", fields))
        else:
            fields["status"] = transition.status.value
            if transition.started_at and transition.completed_at:
                elapsed = transition.completed_at - transition.started_at
                fields["duration_ms"] = round(elapsed.total_seconds() * 1000)
            if transition.error:
                fields["error"] = transition.error
            event = "job retrying" if transition.status is JobStatus.QUEUED else "job finished"
            lines.append(("info", event, fields))
    write_lines(log, lines)  # one write for the batch

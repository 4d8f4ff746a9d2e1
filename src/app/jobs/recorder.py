"""Lifecycle writes off the hot path: transitions are collected and flushed in batches.

A worker reports a transition by appending it to a list (no I/O). One background task
flushes what has gathered as a single UPDATE, a few milliseconds after the first event of
an idle period, so a row trails Redis by milliseconds. Under load it writes at most once
per busy interval (10 ms): batches grow with the load instead of the number of writes.
When PostgreSQL is down the batch is kept and retried with backoff, so jobs keep running
and the rows are true once it is back. What a killed process still held is repaired by
the reconciler from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

from app.jobs.services import Transition, apply_transitions
from app.jobs.states import JobStatus

if TYPE_CHECKING:
    from app.db.connection import HeldConnection

log = structlog.get_logger("app.worker")


class LifecycleRecorder:
    def __init__(
        self,
        connection: HeldConnection,
        *,
        flush_interval: float = 0.002,
        busy_flush_interval: float = 0.010,
        max_batch: int = 1000,
        max_backoff: float = 5.0,
    ) -> None:
        self._connection = connection  # one round trip per batch, no session
        self._flush_interval = flush_interval
        self._busy_flush_interval = busy_flush_interval
        self._last_flush = 0.0
        self._max_batch = max_batch
        self._max_backoff = max_backoff
        self._pending: list[Transition] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lifecycle-recorder")

    def record(self, transition: Transition) -> None:
        self._pending.append(transition)
        self._idle.clear()
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until everything recorded so far is written."""
        await self._idle.wait()

    async def close(self, grace: float = 10.0) -> None:
        """Flush what is pending (for at most `grace` seconds), then stop."""
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

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(self._flush_interval)  # let a batch gather
            self._wake.clear()
            while self._pending:
                if not self._closing:  # events came in during the last write: the load is on
                    next_flush = self._last_flush + self._busy_flush_interval
                    await asyncio.sleep(max(0.0, next_flush - time.monotonic()))
                self._last_flush = time.monotonic()
                batch = self._pending[: self._max_batch]
                try:
                    applied = await apply_transitions(self._connection.fetch, batch)
                except Exception as exc:
                    log.warning(
                        "could not write job lifecycle, will retry",
                        pending=self.pending,
                        retry_in_s=backoff,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                backoff = 0.05
                del self._pending[: len(batch)]
                _log_transitions(batch, applied)
            if not self._pending:
                self._idle.set()


def _log_transitions(batch: list[Transition], applied: list[Transition]) -> None:
    """One readable line per job start and end, written once the row says so."""
    took_effect = {id(t) for t in applied}
    for transition in batch:
        fields: dict[str, object] = {
            "job_id": str(transition.job_id),
            "task": transition.task,
            "attempt": transition.attempt,
        }
        if id(transition) not in took_effect:
            # A late or repeated event (e.g. a job delivered twice): recorded here, not applied.
            log.warning("job event ignored", status=transition.status.value, **fields)
        elif transition.status is JobStatus.RUNNING:
            log.info("job started", worker_id=transition.worker_id, **fields)
        else:
            if transition.started_at and transition.completed_at:
                elapsed = transition.completed_at - transition.started_at
                fields["duration_ms"] = round(elapsed.total_seconds() * 1000)
            if transition.error:
                fields["error"] = transition.error
            event = "job retrying" if transition.status is JobStatus.QUEUED else "job finished"
            log.info(event, status=transition.status.value, **fields)

"""Paused cron schedules, where their runs are enqueued: `TrackedQueue._enqueue` refuses a run
of a paused schedule as SAQ refuses a key that is still unfinished (it returns None).

The pauses live in PostgreSQL (`schedule_pauses`, written by the API), so losing Redis does not
resume a schedule. Each process reads them at most every PAUSES_TTL seconds: a pause or a
resume reaches every worker within that time. SAQ enqueues a schedule's next run ahead of its
time; a run that still waits for a time more than WITHDRAW_MARGIN away when a worker sees the
pause is withdrawn (aborted, its row says by whom), so a nightly schedule paused at noon does
not run that night.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import SchedulePause
from app.jobs.lifecycle import CRON

log = structlog.get_logger(__name__)

PAUSES_TTL = 2.0  # seconds a process trusts the pauses it read
# A run due sooner may already be on its way to a worker: it is left to run.
WITHDRAW_MARGIN = 2.0
_WITHDRAW_LOCK_SECONDS = 10  # one worker withdraws a run; the others see it ended


def schedule_of(job: Job) -> str | None:
    """The schedule whose run `job` is (named by its task), None for a job no schedule made."""
    if not job.meta or CRON not in job.meta:
        return None
    return str(job.function)


class SchedulePauses:
    """The paused schedules of one queue, read from PostgreSQL at most every `ttl` seconds."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        queue_name: str,
        *,
        ttl: float = PAUSES_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._queue_name = queue_name
        self._ttl = ttl
        self._clock = clock
        self._paused: dict[str, str] = {}  # schedule -> who paused it
        self._read_at: float | None = None
        self._looked: set[str] = set()  # schedules whose waiting run was looked at since the read
        self._lock = asyncio.Lock()

    async def refuses(self, queue: RedisQueue, job: Job) -> bool:
        """Whether `job` is a run of a paused schedule (then its waiting run is withdrawn)."""
        name = schedule_of(job)
        if name is None:
            return False
        paused = await self.paused()
        if name not in paused:
            return False
        if name not in self._looked:  # once per read: a GET, not one per schedule tick
            self._looked.add(name)
            await _withdraw_waiting_run(queue, job.key, name, paused[name])
        return True

    async def paused(self) -> dict[str, str]:
        """The paused schedules and who paused them, as last read (within `ttl`)."""
        if self._fresh():
            return self._paused
        async with self._lock:
            if self._fresh():  # another caller read them meanwhile
                return self._paused
            statement = select(SchedulePause.name, SchedulePause.paused_by).where(
                SchedulePause.queue == self._queue_name
            )
            try:
                async with self._sessions() as session:
                    rows = (await session.execute(statement)).all()
                self._paused = {name: paused_by for name, paused_by in rows}
            except Exception as exc:  # PostgreSQL away: the pauses last read still hold
                log.warning("schedule pauses not read", queue=self._queue_name, error=str(exc))
            self._read_at = self._clock()
            self._looked.clear()
        return self._paused

    def _fresh(self) -> bool:
        return self._read_at is not None and self._clock() - self._read_at < self._ttl


async def _withdraw_waiting_run(queue: RedisQueue, key: str, name: str, paused_by: str) -> None:
    """Abort the schedule's run that waits in Redis for a time still WITHDRAW_MARGIN away."""
    waiting = await queue.job(key)
    if waiting is None or waiting.status != Status.QUEUED or schedule_of(waiting) != name:
        return
    if waiting.scheduled <= time.time() + WITHDRAW_MARGIN:
        return
    lock = queue.namespace(f"schedule-withdraw:{name}")
    if not await queue.redis.set(lock, 1, nx=True, ex=_WITHDRAW_LOCK_SECONDS):
        return  # another worker is withdrawing it
    log.info("withdrawing a paused schedule's run", schedule=name, job_key=key)
    await queue.abort(waiting, f"schedule {name} paused by {paused_by}")

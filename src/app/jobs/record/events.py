"""Job events for the API's streams: each status or progress change a row took, published to a
Redis Stream per queue by the process that wrote it.

The recorder publishes what a batch changed once the batch is committed, so an event never
announces a change the table does not hold yet. Every process (workers, and the API for its
aborts) feeds the same stream; each API process reads it once and fans it out to its clients
(`app.jobs.reads.event_hub`). The stream's entry id is the event's SSE `id:`, which a client sends
back as `Last-Event-ID` to resume. The stream keeps about `maxlen` entries: a live view with a
short memory, not a record (the row is the record).

Events are added only while someone may read them: each API process with an open stream
keeps a key alive (`listeners_key`, `app.jobs.reads.event_hub`), for `LISTENED_FOR` seconds after
its last stream closed so that a client can still resume. The check is made by Redis in the
script that adds the events, so an event of a change committed after a stream opened is
never skipped; with nobody listening, a worker's events cost one round trip per batch.

Publishing never holds up the recorder: events wait in a bounded buffer and go out in one
script call per batch; while Redis cannot take them they are dropped (with a warning), and a
stream's clients see the rows' later changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import structlog

from app.jobs.lifecycle import TERMINAL_STATUSES, JobStatus, Transition
from app.jobs.pipeline import CommandBatcher, Script
from app.jobs.record.progress import ProgressUpdate
from app.jobs.record.settled import MovedChild
from app.jobs.record.statements import MovedRow

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger(__name__)

STATUS, PROGRESS = "status", "progress"  # the SSE `event:` of each kind
FIELD = b"event"  # the stream entry's one field: the event as JSON
_BUFFER = 10_000  # events waiting for Redis, at most; older ones are dropped first
_CALL = 1000  # events added by one script call, at most: Redis serves others in between
# Seconds the stream still takes events after an API process's last stream closed: how long
# a client has to reconnect and resume with `Last-Event-ID`.
LISTENED_FOR = 120
# KEYS: the listeners key, the stream. ARGV: the stream's maxlen, then the events.
_ADD_IF_LISTENED = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV do
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', '{FIELD.decode()}', ARGV[i])
end
return #ARGV - 1
"""

_ADD = Script(_ADD_IF_LISTENED)


def stream_key(queue_name: str) -> str:
    return f"tracked-jobs:{queue_name}:events"


def listeners_key(stream: str) -> str:
    """The key that says some API process has (or just had) a stream of `stream` open."""
    return f"{stream}:listeners"


class JobEvent(msgspec.Struct, omit_defaults=True):
    """One change of a job's row, as the streams send it (no arguments, no result)."""

    kind: str  # STATUS or PROGRESS
    job_id: UUID
    status: JobStatus
    attempt: int
    at: datetime
    task_name: str | None = None
    queue: str | None = None
    user_id: UUID | None = None
    project_id: UUID | None = None
    worker_id: str | None = None
    error: str | None = None
    progress: float | None = None
    progress_message: str | None = None

    @property
    def final(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def about(
        cls,
        row: Any,
        *,
        kind: str,
        job_id: UUID,
        status: JobStatus,
        attempt: int,
        task_name: str | None = None,
        **details: Any,
    ) -> JobEvent:
        """An event of `row`'s job (a `MovedRow` or a `BackgroundJob`: what filters need)."""
        return cls(
            kind=kind,
            job_id=job_id,
            status=status,
            attempt=attempt,
            at=datetime.now(UTC),
            task_name=row.task_name or task_name,
            queue=row.queue,
            user_id=row.user_id,
            project_id=row.project_id,
            **details,
        )

    @classmethod
    def of_transition(cls, transition: Transition, row: MovedRow) -> JobEvent:
        return cls.about(
            row,
            kind=STATUS,
            job_id=transition.job_id,
            status=transition.status,
            attempt=transition.attempt,
            task_name=transition.task,
            worker_id=transition.worker_id,
            error=transition.error,
        )

    @classmethod
    def of_child(cls, child: MovedChild) -> JobEvent:
        """A row a dependency statement moved: released, aborted with a parent, waiting again."""
        return cls.about(
            child, kind=STATUS, job_id=child.job_id, status=child.status,
            attempt=child.attempt, error=child.error,
        )  # fmt: skip

    @classmethod
    def of_progress(cls, update: ProgressUpdate, row: MovedRow) -> JobEvent:
        return cls.about(
            row,
            kind=PROGRESS,
            job_id=update.job_id,
            status=JobStatus.RUNNING,
            attempt=update.attempt,
            progress=update.progress,
            progress_message=update.message,
        )


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(JobEvent)


def encode(event: JobEvent) -> bytes:
    return _ENCODER.encode(event)


def decode(data: bytes) -> JobEvent:
    return _DECODER.decode(data)


class EventPublisher:
    """Adds the recorder's events to the queue's stream, one call per batch, off its path."""

    def __init__(self, redis: Redis, queue_name: str, *, maxlen: int = 10_000) -> None:
        self._redis = redis
        self.key = stream_key(queue_name)
        self.listeners = listeners_key(self.key)
        self._add = redis.register_script(_ADD_IF_LISTENED)
        self._batcher: CommandBatcher | None = None
        self._maxlen = maxlen
        self._pending: deque[JobEvent] = deque(maxlen=_BUFFER)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._idle = asyncio.Event()  # nothing pending or being sent
        self._idle.set()

    def send_with(self, batcher: CommandBatcher) -> None:
        """Add the events in the pipelines `batcher` sends (a worker's queue sends them anyway)."""
        self._batcher = batcher

    def publish(self, events: Iterable[JobEvent]) -> None:
        """Queue events for the stream (no I/O here)."""
        self._pending.extend(events)
        if not self._pending:
            return
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="job-events")

    async def publish_now(self, events: list[JobEvent]) -> None:
        """Send events at once (one pipeline), before what the caller does next; a failure is
        logged, never raised."""
        if events:
            await self._send(events)

    async def close(self, grace: float = 2.0) -> None:
        """Send what is pending (for at most `grace` seconds), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), _CALL))]
                if not await self._send(batch):
                    await asyncio.sleep(0.5)  # do not spin while Redis is away
            if not self._pending:
                self._idle.set()

    async def _send(self, batch: list[JobEvent]) -> bool:
        keys: list[Any] = [self.listeners, self.key]
        args: list[Any] = [self._maxlen, *map(encode, batch)]
        try:
            if self._batcher is not None:  # impatient: a live view does not wait out an outage
                await self._batcher.execute(_ADD.call(keys, args), patient=False)
            else:
                await self._add(keys=keys, args=args)
        except Exception as exc:  # a live view: what Redis cannot take now is dropped
            if not self._failing:
                log.warning("job events not published", count=len(batch), error=str(exc))
            self._failing = True
            return False
        self._failing = False
        return True

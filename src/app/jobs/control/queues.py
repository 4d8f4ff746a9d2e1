"""Pausing, resuming and draining a queue, audited: the API, the monitor and the CLI call this.

A pause is a row of `queue_pauses` (the record: a Redis restarted empty does not resume the
queue) mirrored into the queue's gate in Redis, which the workers' take reads
(`app.jobs.queue.gate`). Triggers are still accepted while a queue is paused: its jobs wait in
Redis, `queued`. A drain is a pause, then waiting until no job of the queue is taken (its
active list is empty): the count left is `running`.

Order of the writes: a pause closes the gate first, then records the row (a pause that cannot
be recorded puts the gate back); a resume deletes the row first, then opens the gate and
announces it (a resume whose gate cannot be opened leaves the queue paused: call it again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import AuditAction, AuditLog
from app.auth.roles import Principal
from app.db.models import QueuePause
from app.jobs.queue.gate import close_gate, open_gate, put_gate_back


class UnknownQueueError(LookupError):
    """No queue of this name is served here."""


@dataclass(frozen=True)
class QueuePauseState:
    name: str
    paused_by: str | None = None
    paused_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.paused_by is not None


class QueuePausing:
    """The pauses of the queues `names`, on `redis` (their gates) and PostgreSQL (the record)."""

    def __init__(
        self,
        names: Sequence[str],
        redis: Redis,
        sessions: Callable[[], AsyncSession],
        audit: AuditLog,
    ) -> None:
        self.names = sorted(names)
        self._redis = redis
        self._sessions = sessions
        self._audit = audit

    async def states(self) -> dict[str, QueuePauseState]:
        """Each queue's pause as recorded (one statement)."""
        async with self._sessions() as session:
            rows = await session.scalars(select(QueuePause).where(QueuePause.queue.in_(self.names)))
            found = {
                row.queue: QueuePauseState(row.queue, row.paused_by, row.paused_at) for row in rows
            }
        return {name: found.get(name, QueuePauseState(name)) for name in self.names}

    async def state(self, name: str) -> QueuePauseState:
        self.check(name)
        return (await self.states())[name]

    async def pause(
        self, name: str, principal: Principal, *, drain: bool = False
    ) -> QueuePauseState:
        """Pause `name` (a no-op, audited as such, if it is paused already)."""
        self.check(name)
        async with self._audit.recording(principal, AuditAction.QUEUE_PAUSE) as entry:
            entry.filter, entry.count = {"queue": name, "drain": drain}, 0
            before = await close_gate(self._redis, name)
            statement = (
                insert(QueuePause)
                .values(queue=name, paused_by=principal.actor, paused_at=datetime.now(UTC))
                .on_conflict_do_nothing()
                .returning(QueuePause.queue)
            )
            try:
                async with self._sessions() as session:
                    if (await session.execute(statement)).first() is None:
                        entry.detail = "already paused"
            except BaseException:
                await put_gate_back(self._redis, name, before)
                raise
        return await self.state(name)

    async def resume(self, name: str, principal: Principal) -> QueuePauseState:
        """Resume `name` (a no-op, audited as such, if it is not paused); workers waiting for
        it take again at once."""
        self.check(name)
        async with self._audit.recording(principal, AuditAction.QUEUE_RESUME) as entry:
            entry.filter, entry.count = {"queue": name}, 0
            statement = (
                delete(QueuePause).where(QueuePause.queue == name).returning(QueuePause.paused_by)
            )
            async with self._sessions() as session:
                resumed = (await session.execute(statement)).first()
            entry.detail = "was not paused" if resumed is None else f"paused by {resumed[0]}"
            await open_gate(self._redis, name)  # also when not paused: a gate left closed opens
        return await self.state(name)

    async def running(self, name: str) -> int:
        """How many of the queue's jobs are taken and not yet ended (its active list)."""
        self.check(name)
        return int(await self._redis.llen(f"saq:{name}:active"))  # type: ignore[misc]

    def check(self, name: str) -> None:
        if name not in self.names:
            known = ", ".join(self.names) or "none"
            raise UnknownQueueError(f"no queue named {name!r} (served here: {known})")

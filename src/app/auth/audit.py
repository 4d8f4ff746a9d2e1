"""The audit log, `job_actions`: one row per state-changing call, who made it and how it ended.

Triggers are not in it: a job's own row records who enqueued it (`enqueued_by`), so the hot
path writes nothing more. Everything else that changes state (cancel, retry, bulk actions,
prune, key creation and revocation, pausing and resuming a schedule or a queue) calls
`AuditLog.record` or adds `action_row` to its own transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog
from litestar.exceptions import ClientException, NotFoundException, PermissionDeniedException
from litestar.status_codes import HTTP_409_CONFLICT
from sqlalchemy import select

from app.db.models import JobAction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth.roles import Principal

log = structlog.get_logger(__name__)


class OutOfScope(NotFoundException):
    """A job of another project than the key's: answered exactly as a job that does not
    exist (404), so a scoped key cannot tell that it exists; audited as `forbidden`."""


class AuditAction(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    BULK_CANCEL = "bulk_cancel"
    BULK_RETRY = "bulk_retry"
    PRUNE = "prune"
    SAQ_RETRY = "saq_retry"  # from SAQ's web UI
    SAQ_ABORT = "saq_abort"
    KEY_CREATE = "key_create"
    KEY_REVOKE = "key_revoke"
    SCHEDULE_PAUSE = "schedule_pause"  # a cron schedule (`filter`: its queue and name)
    SCHEDULE_RESUME = "schedule_resume"
    QUEUE_PAUSE = "queue_pause"  # a queue (`filter`: its name); a drain is a pause
    QUEUE_RESUME = "queue_resume"


class Outcome(StrEnum):
    OK = "ok"
    CONFLICT = "conflict"  # the job's state did not allow it (409)
    FORBIDDEN = "forbidden"  # outside the key's project (403)
    FAILED = "failed"  # an error on our side


def action_row(
    principal: Principal,
    action: AuditAction,
    *,
    job_ids: Iterable[UUID] = (),
    filter: Mapping[str, Any] | None = None,
    count: int | None = None,
    outcome: Outcome = Outcome.OK,
    detail: str | None = None,
) -> JobAction:
    """The audit row of one call; `count` defaults to the number of `job_ids`."""
    ids = list(job_ids)
    return JobAction(
        at=datetime.now(UTC),
        actor=principal.actor,
        role=principal.role.value,
        action=action.value,
        job_ids=ids,
        filter=dict(filter) if filter is not None else None,
        count=len(ids) if count is None else count,
        outcome=outcome.value,
        detail=detail,
    )


@dataclass
class AuditEntry:
    """What an action's audit row will say; the action fills it in as it goes."""

    job_ids: list[UUID] = field(default_factory=list)
    filter: Mapping[str, Any] | None = None
    count: int | None = None
    detail: str | None = None


class AuditLog:
    """Writes and reads `job_actions`, each call in a short session of its own."""

    def __init__(self, sessions: Callable[[], AsyncSession]) -> None:
        self._sessions = sessions

    @contextlib.asynccontextmanager
    async def recording(
        self,
        principal: Principal,
        action: AuditAction,
        *,
        job_ids: Iterable[UUID] = (),
        conflicts: tuple[type[Exception], ...] = (),
    ) -> AsyncIterator[AuditEntry]:
        """One audit row for the action in the block, however it ends: `ok`, `forbidden` on
        a 403, `conflict` (answered 409 with its reason) on one of `conflicts`, else `failed`."""
        entry, outcome = AuditEntry(job_ids=list(job_ids)), Outcome.FAILED
        try:
            yield entry
            outcome = Outcome.OK
        except (PermissionDeniedException, OutOfScope):
            outcome = Outcome.FORBIDDEN
            raise
        except conflicts as exc:
            outcome, entry.detail = Outcome.CONFLICT, str(exc)
            # Litestar's own 4xx: logged as a client error, not with a traceback.
            raise ClientException(detail=str(exc), status_code=HTTP_409_CONFLICT) from None
        except Exception as exc:
            entry.detail = type(exc).__name__
            raise
        finally:
            await self.record(
                principal,
                action,
                job_ids=entry.job_ids,
                filter=entry.filter,
                count=entry.count,
                outcome=outcome,
                detail=entry.detail,
            )

    async def record(
        self,
        principal: Principal,
        action: AuditAction,
        *,
        job_ids: Iterable[UUID] = (),
        filter: Mapping[str, Any] | None = None,
        count: int | None = None,
        outcome: Outcome = Outcome.OK,
        detail: str | None = None,
    ) -> None:
        """Write one audit row (committed on return).

        Called once the action has happened, so it never raises: a row that cannot be
        written is logged in full instead (an ERROR line), and the caller's answer stands.
        """
        row = action_row(
            principal,
            action,
            job_ids=job_ids,
            filter=filter,
            count=count,
            outcome=outcome,
            detail=detail,
        )
        try:
            async with self._sessions() as session:
                session.add(row)
                await session.commit()
        except Exception as exc:
            log.error(
                "audit row not written",
                error=str(exc),
                actor=row.actor,
                role=row.role,
                action=row.action,
                job_ids=[str(job_id) for job_id in row.job_ids],
                filter=row.filter,
                count=row.count,
                outcome=row.outcome,
                detail=row.detail,
            )

    async def newest(self, limit: int) -> Sequence[JobAction]:
        """The latest `limit` rows, newest first."""
        statement = (
            select(JobAction).order_by(JobAction.at.desc(), JobAction.id.desc()).limit(limit)
        )
        async with self._sessions() as session:
            return list((await session.scalars(statement)).all())

"""A job's start, finish or retry as the moves' channel carries it: kept until Redis takes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from saq.job import Status

if TYPE_CHECKING:
    from saq.job import Job

    from app.jobs.pipeline import Command, Work

log = structlog.get_logger(__name__)


class KeptMove:
    """A job's start, finish or retry: its caller is told after the channel's bound, but the
    move is kept and sent until Redis takes it (the row has the transition already), in its
    place: what the worker stages next for the job lands after it."""

    replays = True
    patient = True

    def __init__(self, job: Job, build: Callable[[], list[Command]]) -> None:
        self._build, self._key, self._status = build, job.key, str(Status(job.status).value)
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._late = False

    def commands(self) -> list[Command]:
        return [] if self.future.cancelled() else self._build()  # cancelled: never sent

    def resolve(self, replies: list[Any]) -> None:
        error = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if error is not None:
            self.fail(error)
            return
        if self._late:
            log.warning("job move reached redis late", job_key=self._key, status=self._status)
        if not self.future.done():
            self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self._late:
            log.error(
                "job move never reached redis", job_key=self._key, status=self._status,
                error=str(error),
            )  # fmt: skip
        elif not self.future.done():
            self.future.set_exception(error)

    def expire(self, error: BaseException) -> Work | None:
        self._late = True
        if not self.future.done():
            self.future.set_exception(error)
        return self

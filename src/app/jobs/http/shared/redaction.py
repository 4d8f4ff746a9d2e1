"""Masking for viewers: argument and result values under a sensitive key (`REDACT_KEYS`).

A key matches whatever its case (`Password`, `API_KEY`), at any depth of dicts and lists.
Operators and admins see jobs as stored: they act on them (a retry re-runs the arguments).
The row itself is never changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar.di import Provide

from app.auth.roles import Principal, Role
from app.jobs.http.shared.schemas import JobRead

MASK = "***"


class Redactor:
    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = frozenset(key.lower() for key in keys)

    def masks_for(self, principal: Principal) -> bool:
        return bool(self._keys) and not principal.may(Role.OPERATOR)

    def value(self, value: Any) -> Any:
        """`value` with every entry under a sensitive key replaced by the mask."""
        if isinstance(value, dict):
            return {
                key: MASK
                if isinstance(key, str) and key.lower() in self._keys
                else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def job(self, job: JobRead, principal: Principal) -> JobRead:
        """The job as `principal` may see it."""
        if not self.masks_for(principal):
            return job
        return msgspec.structs.replace(
            job, arguments=self.value(job.arguments), result=self.value(job.result)
        )


def redaction_dependencies(keys: Iterable[str]) -> dict[str, Provide]:
    """`redactor`: the process's one `Redactor`, for every handler that shows a job."""
    redactor = Redactor(keys)

    def provide_redactor() -> Redactor:
        return redactor

    return {"redactor": Provide(provide_redactor, use_cache=True, sync_to_thread=False)}

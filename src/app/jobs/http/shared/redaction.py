"""Masking for viewers: argument and result values under a sensitive key (`REDACT_KEYS`).

A key is sensitive when its name, reduced to its letters and digits in lower case, contains
one of `REDACT_KEYS` reduced the same way: `password` matches `Password`, `db_password` and
`smtpPassword`; `api_key` matches `apiKey`, `x-api-key` and `API_KEY`. At any depth of dicts
and lists. Masking a little too much (`tokens_used`) is the side a viewer's page errs on.
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


_NAMES_KEPT = 4096  # key names whose verdict is remembered (a job's keys repeat)


def reduced(name: str) -> str:
    """A key's name as it is matched: its letters and digits, lower-cased."""
    return "".join(character for character in name.lower() if character.isalnum())


class Redactor:
    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(sorted({reduced(key) for key in keys} - {""}))
        self._verdicts: dict[str, bool] = {}

    def masks_for(self, principal: Principal) -> bool:
        return bool(self._keys) and not principal.may(Role.OPERATOR)

    def sensitive(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            reduced_name = reduced(name)
            verdict = any(key in reduced_name for key in self._keys)
            if len(self._verdicts) >= _NAMES_KEPT:
                self._verdicts.clear()
            self._verdicts[name] = verdict
        return verdict

    def value(self, value: Any) -> Any:
        """`value` with every entry under a sensitive key replaced by the mask."""
        if isinstance(value, dict):
            return {
                key: MASK if isinstance(key, str) and self.sensitive(key) else self.value(item)
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

"""The roles, ordered, and who a request acts as (a leaf: imports nothing from `app`).

`viewer` < `operator` < `admin`: each role may do everything the roles below it may.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID


class Role(StrEnum):
    VIEWER = "viewer"  # read jobs, queues, /saq
    OPERATOR = "operator"  # also trigger, cancel, retry, /saq retry and abort
    ADMIN = "admin"  # also keys and the audit log

    @property
    def rank(self) -> int:
        return _RANKS[self]

    # A str's own order is alphabetical ("admin" < "viewer"): compare by rank instead.
    def __lt__(self, other: Any) -> bool:
        return self.rank < Role(other).rank

    def __le__(self, other: Any) -> bool:
        return self.rank <= Role(other).rank

    def __gt__(self, other: Any) -> bool:
        return self.rank > Role(other).rank

    def __ge__(self, other: Any) -> bool:
        return self.rank >= Role(other).rank


_RANKS = {role: rank for rank, role in enumerate(Role)}


def role_in(column: str = "role") -> str:
    """`role IN ('viewer', ...)`: the CHECK constraint of tables that store a role."""
    return "{} IN ({})".format(column, ", ".join(f"'{role.value}'" for role in Role))


# The actors that are not an API key's display prefix.
BOOTSTRAP_ACTOR = "bootstrap"  # ADMIN_API_KEY
OPEN_MODE_ACTOR = "anonymous (auth disabled)"
CLI_ACTOR = "cli"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the guard resolves it from the request's key."""

    actor: str  # the key's display prefix, or one of the actors above; never the key
    role: Role
    project_id: UUID | None = None  # set: this principal sees and acts on that project only
    key_id: UUID | None = None  # the `api_keys` row, if any

    def may(self, required: Role) -> bool:
        return self.role >= required

    def sees_project(self, project_id: UUID | None) -> bool:
        """Whether a job of `project_id` is within this principal's scope."""
        return self.project_id is None or self.project_id == project_id


OPEN_MODE = Principal(actor=OPEN_MODE_ACTOR, role=Role.ADMIN)
BOOTSTRAP = Principal(actor=BOOTSTRAP_ACTOR, role=Role.ADMIN)
CLI = Principal(actor=CLI_ACTOR, role=Role.ADMIN)

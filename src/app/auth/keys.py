"""API keys: their format, their digest, and `ApiKeyService` (create, list, revoke, look up).

A key is `bgj_` and 43 URL-safe characters from `secrets.token_urlsafe(32)` (256 random bits).
Only its SHA-256 is stored; a key is found by looking its digest up, never by comparing
plaintexts. The first 12 characters (`bgj_` and 8 more) are kept as its display prefix, the
name it goes by in lists and in the audit log.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from advanced_alchemy.filters import OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import update

from app.auth.audit import AuditAction, action_row
from app.auth.roles import Principal, Role
from app.db.models import ApiKey

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

KEY_PREFIX = "bgj_"  # recognisable in a config file or a secret scanner's report
DISPLAY_PREFIX_LENGTH = 12


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    """What is stored and looked up: the SHA-256 of the key, hex (as ADMIN_API_KEY's)."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


class UnknownKeyError(LookupError):
    """No API key has this id."""


class KeyScopeError(ValueError):
    """An admin key cannot be scoped to a project: it manages keys for every project."""


@dataclass(frozen=True)
class CreatedKey:
    """A new key's row and its plaintext, which exists only in this answer."""

    row: ApiKey
    plaintext: str


class ApiKeyService(SQLAlchemyAsyncRepositoryService[ApiKey]):
    """The `api_keys` table. Creating and revoking a key write its audit row in the same
    transaction, so no key changes without a record of who changed it."""

    class Repo(SQLAlchemyAsyncRepository[ApiKey]):
        model_type = ApiKey

    repository_type = Repo

    def __init__(self, session: AsyncSession, **kwargs: Any) -> None:
        super().__init__(session, **kwargs)

    async def create_key(
        self, *, role: Role, name: str, project_id: UUID | None, actor: Principal
    ) -> CreatedKey:
        if role is Role.ADMIN and project_id is not None:
            raise KeyScopeError("an admin key cannot be scoped to a project")
        plaintext = generate_key()
        row = ApiKey(
            name=name,
            prefix=display_prefix(plaintext),
            key_hash=digest(plaintext),
            role=role.value,
            project_id=project_id,
        )
        self.repository.session.add(
            action_row(actor, AuditAction.KEY_CREATE, detail=_describe(row))
        )
        row = await self.create(row, auto_commit=True)
        return CreatedKey(row=row, plaintext=plaintext)

    async def list_keys(self) -> Sequence[ApiKey]:
        """Every key, revoked ones too, newest first."""
        return await self.get_many(OrderBy("created_at", "desc"), OrderBy("id", "desc"))

    async def revoke(self, key_id: UUID, actor: Principal) -> ApiKey:
        """Mark the key revoked (a second revoke keeps the first time); audited either way."""
        row = await self.get_one_or_none(id=key_id)
        if row is None:
            raise UnknownKeyError(f"no API key with id {key_id}")
        already = row.revoked_at is not None
        if not already:
            row.revoked_at = datetime.now(UTC)
        self.repository.session.add(
            action_row(
                actor,
                AuditAction.KEY_REVOKE,
                detail=_describe(row) + (" (already revoked)" if already else ""),
            )
        )
        return await self.update(row, auto_commit=True)

    async def find_by_digest(self, key_hash: str) -> ApiKey | None:
        return await self.get_one_or_none(key_hash=key_hash)

    async def touch(self, key_id: UUID, at: datetime) -> None:
        """Record that the key was used (the guard calls it at most once a minute per key)."""
        session = self.repository.session
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
        await session.commit()


def _describe(row: ApiKey) -> str:
    scope = f", project {row.project_id}" if row.project_id else ""
    return f"key {row.prefix} ({row.name!r}, {row.role}{scope})"

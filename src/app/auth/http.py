"""The admin API: keys (create, list, revoke) and the audit log; every route needs `admin`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Response, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.enums import HttpMethod
from litestar.exceptions import NotFoundException, PermissionDeniedException, ValidationException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import AuditLog
from app.auth.guard import BEARER, Authenticator, role
from app.auth.keys import ApiKeyService, KeyScopeError, UnknownKeyError
from app.auth.roles import Principal, Role
from app.db.models import ApiKey, JobAction
from app.http_common.body import StrictJSONBody
from app.http_common.responses import NOT_JSON, errors


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/keys`."""

    role: Role
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    project_id: UUID | None = None  # set: the key sees and acts on this project's jobs only

    @staticmethod
    def refine_schema(schema: Schema) -> None:
        """An admin key manages every project's keys: the schema says it has no project."""
        schema.schema_if = Schema(
            properties={"role": Schema(const=Role.ADMIN.value)}, required=["role"]
        )
        schema.then = Schema(properties={"project_id": Schema(type=OpenAPIType.NULL)})


class KeyRead(msgspec.Struct):
    """A key as lists show it: never its digest, never its plaintext."""

    id: UUID
    name: str
    prefix: str
    role: Role
    project_id: UUID | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyRead:
        return cls(**{name: getattr(row, name) for name in KeyRead.__struct_fields__})


class KeyCreated(KeyRead):
    """A new key, with its plaintext: shown in this answer only."""

    key: str


class AuditEntry(msgspec.Struct):
    """One row of `job_actions`."""

    id: UUID
    at: datetime
    actor: str
    role: str
    action: str
    job_ids: list[UUID]
    filter: dict[str, Any] | None
    count: int
    outcome: str
    detail: str | None

    @classmethod
    def from_row(cls, row: JobAction) -> AuditEntry:
        return cls(**{name: getattr(row, name) for name in cls.__struct_fields__})


class KeyController(Controller):
    path = "/api/v1/keys"
    tags = ("keys",)
    opt = role(Role.ADMIN)
    security = BEARER

    # Litestar 2 lists only the first method of a path with two handlers in its own OPTIONS
    # answer (litestar#4169, fixed in 3). Handlers register in the order of their names, so
    # this one, registered first, is the path's OPTIONS handler and lists both.
    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False)
    async def allowed_methods(self) -> Response[None]:
        return Response(
            None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": "GET, OPTIONS, POST"}
        )

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        dto=StrictJSONBody[KeyCreate],
        return_dto=None,
        responses=errors(
            {
                400: "The body is not JSON, a value is missing, of the wrong type or unknown, "
                "or an admin key was given a project.",
                403: "The key's role may not do this, or the API runs in open mode, where "
                "keys are not made.",
                415: NOT_JSON,
            }
        ),
    )
    async def create_key(
        self,
        data: JSONBody[KeyCreate],
        keys_service: NamedDependency[ApiKeyService],
        principal: NamedDependency[Principal],
        authenticator: NamedDependency[Authenticator],
    ) -> KeyCreated:
        """A new key: its plaintext is in this answer only (its SHA-256 is what is kept)."""
        if authenticator.open_mode:
            # Anyone may call it then, and the key would still work once the checks are on.
            raise PermissionDeniedException(
                detail="keys are not made in open mode: anyone could make one. Use "
                "`litestar --app app.asgi:create_app keys create`, or turn the checks on"
            )
        try:
            created = await keys_service.create_key(
                role=data.role, name=data.name, project_id=data.project_id, actor=principal
            )
        except KeyScopeError as exc:
            raise ValidationException(detail=str(exc)) from None
        return KeyCreated(
            **msgspec.structs.asdict(KeyRead.from_row(created.row)), key=created.plaintext
        )

    @get("/", responses=errors({}))
    async def list_keys(self, keys_service: NamedDependency[ApiKeyService]) -> list[KeyRead]:
        """Every key, revoked ones too, newest first."""
        return [KeyRead.from_row(row) for row in await keys_service.list_keys()]

    @post(
        "/{key_id:uuid}/revoke",
        status_code=HTTP_200_OK,
        responses=errors({400: "key_id is not a UUID.", 404: "There is no key with this id."}),
    )
    async def revoke_key(
        self,
        key_id: FromPath[UUID],
        keys_service: NamedDependency[ApiKeyService],
        principal: NamedDependency[Principal],
        authenticator: NamedDependency[Authenticator],
    ) -> KeyRead:
        """Revoke a key: this process refuses it at once, other API processes once their
        cache of it expires (docs/security.md)."""
        try:
            row = await keys_service.revoke(key_id, actor=principal)
        except UnknownKeyError as exc:
            raise NotFoundException(detail=str(exc)) from None
        authenticator.forget(key_id)
        return KeyRead.from_row(row)


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ("audit",)
    opt = role(Role.ADMIN)
    security = BEARER

    @get("/", responses=errors({400: "limit is not an integer from 1 to 500."}))
    async def list_actions(
        self,
        audit: NamedDependency[AuditLog],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[AuditEntry]:
        """State-changing calls, newest first: who, what, on which jobs, how it ended."""
        return [AuditEntry.from_row(row) for row in await audit.newest(limit)]


def access_dependencies(
    sessions: Callable[[], AsyncSession], authenticator: Authenticator, audit: AuditLog
) -> dict[str, Provide]:
    """`keys_service` on a transactional session (a key and its audit row commit together),
    the process's `authenticator` and `audit` log."""

    async def provide_keys_service() -> AsyncIterator[ApiKeyService]:
        async with sessions() as session:
            yield ApiKeyService(session)

    def provide_authenticator() -> Authenticator:
        return authenticator

    def provide_audit() -> AuditLog:
        return audit

    return {
        "keys_service": Provide(provide_keys_service),
        "authenticator": Provide(provide_authenticator, use_cache=True, sync_to_thread=False),
        "audit": Provide(provide_audit, use_cache=True, sync_to_thread=False),
    }

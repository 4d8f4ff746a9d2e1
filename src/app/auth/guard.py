"""The one guard: every route declares the role it needs, and `require_role` checks it.

A route declares its role with `opt=role(Role.OPERATOR)` (on the handler, or on its controller
for all its handlers), or says it is public with `opt=PUBLIC`. A route that declares neither
is refused, whoever asks: access is denied by default. The guard resolves the request's
`Authorization: Bearer <key>` to a `Principal` and leaves it on the connection
(`request.user`, and the `principal` dependency); a browser's request without that header may
prove a key with the monitor's session cookie instead (`app.auth.session`).

Keys are looked up by their digest and the answer is kept for `KEY_CACHE_TTL` seconds, so
the trigger's hot path does not pay a query per request; a revocation therefore reaches
other API processes within that time (the process that revokes forgets the key at once).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.plugins import InitPluginProtocol

from app.auth.keys import ApiKeyService, digest
from app.auth.roles import BOOTSTRAP, OPEN_MODE, Principal, Role
from app.auth.session import SESSION_COOKIE, SessionCookies

if TYPE_CHECKING:
    from litestar import Request
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)

KEY_CACHE_TTL = 10.0  # seconds a looked-up key (or its absence) is trusted
TOUCH_INTERVAL = 60.0  # seconds between two writes of one key's last_used_at
_MAX_CACHED = 10_000  # a flood of made-up keys must not grow the cache without bound
_STATE_KEY = "authenticator"
PUBLIC: dict[str, Any] = {"public": True}  # opt= of a route anyone may call (Litestar copies it)
# The OpenAPI security scheme of `Authorization: Bearer <key>`; guarded controllers name it
# in `security = BEARER` so the schema says which operations need a key.
BEARER_AUTH = "BearerAuth"
BEARER: list[dict[str, list[str]]] = [{BEARER_AUTH: []}]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ByMethod:
    """A route's roles by method: `read` for GET/HEAD/OPTIONS, `write` for the others."""

    read: Role
    write: Role

    def for_method(self, method: str) -> Role:
        return self.read if method in _SAFE_METHODS else self.write


def role(
    required: Role, *, write: Role | None = None, every_project: bool = False
) -> dict[str, Any]:
    """The `opt=` that declares what a route needs: `required`, or `write` for methods that
    change something (when they need more). `every_project`: the route shows or acts on
    every project's jobs, so keys scoped to one project may not use it."""
    declared = required if write is None else ByMethod(read=required, write=write)
    return {"role": declared, "every_project": every_project}


def is_public(opt: Mapping[str, Any]) -> bool:
    # `exclude_from_auth` is Litestar's own spelling, used by litestar-saq's static files.
    return bool(opt.get("public") or opt.get("exclude_from_auth"))


def required_role(opt: Mapping[str, Any], method: str) -> Role | None:
    """The role a route declares for `method`; None if it declares none."""
    declared = opt.get("role")
    if isinstance(declared, ByMethod):
        return declared.for_method(method)
    return declared if isinstance(declared, Role) else None


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal | None  # None: unknown or revoked
    expires_at: float


class Authenticator:
    """Resolves a request's key to a `Principal`: the bootstrap key, or a key row by digest."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        *,
        open_mode: bool,
        bootstrap_digest: str | None,
        disabled_but_keyed: bool = False,
        ttl: float = KEY_CACHE_TTL,
        touch_interval: float = TOUCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        cookies: SessionCookies | None = None,
    ) -> None:
        self.open_mode = open_mode
        self.cookies = cookies  # the monitor's browser sessions; None: no sessions
        self._disabled_but_keyed = disabled_but_keyed  # AUTH_DISABLED with ADMIN_API_KEY
        self._sessions = sessions
        self._bootstrap = bootstrap_digest
        self._ttl = ttl
        self._touch_interval = touch_interval
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}
        self._touched: dict[UUID, float] = {}
        self._touches: set[asyncio.Task[None]] = set()

    async def principal_for(self, authorization: str | None) -> Principal:
        """Who the Authorization header names; 401 for a missing, unknown or revoked key."""
        if self.open_mode:
            return OPEN_MODE
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        return await self._principal_by_digest(digest(key))

    async def principal_for_session(self, cookie: str) -> Principal:
        """Who a session cookie stands for (its key, looked up as the key would be); 401 for
        a forged or expired cookie, or a key revoked since the login."""
        if self.open_mode:
            return OPEN_MODE
        key_hash = self.cookies.key_digest(cookie) if self.cookies is not None else None
        if key_hash is None:
            raise _unauthorized("the session has expired or is not valid: log in again")
        return await self._principal_by_digest(key_hash)

    async def _principal_by_digest(self, key_hash: str) -> Principal:
        if self._bootstrap is not None and hmac.compare_digest(key_hash, self._bootstrap):
            return BOOTSTRAP
        principal = await self._lookup(key_hash)
        if principal is None:
            raise _unauthorized("unknown or revoked API key")
        self._touch(principal)
        return principal

    def forget(self, key_id: UUID) -> None:
        """Drop a key's cached answer now (this process revoked it)."""
        for key_hash, cached in list(self._cache.items()):
            if cached.principal is not None and cached.principal.key_id == key_id:
                del self._cache[key_hash]

    async def announce(self) -> None:
        """The start-up line saying whether access is checked (loud when it is not)."""
        if self.open_mode:
            log.warning(
                "AUTH DISABLED: every route is open to anyone who can reach this port "
                "(AUTH_DISABLED=true); on a shared network set AUTH_DISABLED=false and "
                "ADMIN_API_KEY (docs/security.md)"
            )
        elif self._disabled_but_keyed:
            log.warning("AUTH_DISABLED ignored: ADMIN_API_KEY is set, so access checks are on")
        else:
            log.info("access checks on", bootstrap_key=self._bootstrap is not None)

    async def close(self) -> None:
        """Let pending last_used_at writes finish (they are short)."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)

    async def _lookup(self, key_hash: str) -> Principal | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and cached.expires_at > now:
            return cached.principal
        # Concurrent requests with the same key share one query.
        pending = self._lookups.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._read(key_hash))
            self._lookups[key_hash] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(key_hash, None))
        principal = await asyncio.shield(pending)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key_hash] = _Cached(principal, self._clock() + self._ttl)
        return principal

    async def _read(self, key_hash: str) -> Principal | None:
        async with self._sessions() as session:
            row = await ApiKeyService(session).find_by_digest(key_hash)
        if row is None or row.revoked_at is not None:
            return None
        return Principal(
            actor=row.prefix, role=Role(row.role), project_id=row.project_id, key_id=row.id
        )

    def _touch(self, principal: Principal) -> None:
        """Write last_used_at at most once per TOUCH_INTERVAL per key, after the request."""
        key_id = principal.key_id
        now = self._clock()
        if key_id is None or now - self._touched.get(key_id, -self._touch_interval) < (
            self._touch_interval
        ):
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._write_touch(key_id, datetime.now(UTC)))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _write_touch(self, key_id: UUID, at: datetime) -> None:
        try:
            async with self._sessions() as session:
                await ApiKeyService(session).touch(key_id, at)
        except Exception as exc:  # only bookkeeping: the request it came from succeeded
            log.warning("could not record an API key's use", key_id=str(key_id), error=str(exc))


async def require_role(
    connection: ASGIConnection[Any, Any, Any, Any], route: BaseRouteHandler
) -> None:
    """The app's one guard: 401 without a valid key, 403 for a role too low or none declared."""
    opt = route.opt
    method = str(connection.scope.get("method", "GET"))  # a websocket's scope has none
    # OPTIONS only lists a route's methods (and CORS preflights never carry a key).
    if is_public(opt) or method == "OPTIONS":
        return
    authenticator: Authenticator = connection.app.state[_STATE_KEY]
    authorization = connection.headers.get("authorization")
    # A browser's session cookie stands for a key; a request's own key comes first.
    session = None if authorization else connection.cookies.get(SESSION_COOKIE)
    if session:
        principal = await authenticator.principal_for_session(session)
    else:
        principal = await authenticator.principal_for(authorization)
    connection.scope["user"] = principal
    required = required_role(opt, method)
    if required is None:
        raise PermissionDeniedException(detail="this route declares no role, so nobody may call it")
    if not principal.may(required):
        raise PermissionDeniedException(
            detail=f"this needs the {required} role; the key's role is {principal.role}"
        )
    if opt.get("every_project") and principal.project_id is not None:
        raise PermissionDeniedException(
            detail="this shows every project's jobs: a key scoped to a project may not use it"
        )


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Who the request acts as (the guard has put it there)."""
    return request.user  # type: ignore[no-any-return]


class AccessControl(InitPluginProtocol):
    """Puts `require_role` on every route, the `principal` dependency and the start-up line."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.guards = [require_role, *app_config.guards]
        app_config.dependencies["principal"] = Provide(provide_principal, sync_to_thread=False)
        app_config.state[_STATE_KEY] = self.authenticator
        app_config.on_startup.append(self.authenticator.announce)
        app_config.on_shutdown.append(self.authenticator.close)
        return app_config


def forbid_other_project(principal: Principal, project_id: UUID | None) -> None:
    """403 when a project-scoped key reaches for a job of another project (or of none)."""
    if not principal.sees_project(project_id):
        raise PermissionDeniedException(detail="this key may only act on its own project's jobs")


def project_in_scope(principal: Principal, asked: UUID | None) -> UUID | None:
    """The project a list or a trigger is about under the key's scope: a scoped key's own
    project when none is asked for, a 403 for another one; any project for other keys."""
    if principal.project_id is None:
        return asked
    forbid_other_project(principal, asked if asked is not None else principal.project_id)
    return principal.project_id

"""The one guard: every route declares the role it needs, and `require_role` checks it.

A route declares its role with `opt=role(Role.OPERATOR)` (on the handler, or on its controller
for all its handlers), or says it is public with `opt=PUBLIC`. A route that declares neither
is refused, whoever asks: access is denied by default. The guard resolves the request's
`Authorization: Bearer <key>` to a `Principal` (`app.auth.authenticator`) and leaves it on
the connection (`request.user`, and the `principal` dependency); a browser's request without
that header may prove a key with the monitor's session cookie instead (`app.auth.session`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.plugins import InitPluginProtocol

from app.auth.audit import OutOfScope
from app.auth.authenticator import KEY_CACHE_TTL, Authenticator
from app.auth.roles import Principal, Role
from app.auth.session import SESSION_COOKIE

if TYPE_CHECKING:
    from litestar import Request
    from litestar.config.app import AppConfig
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = [
    "BEARER",
    "BEARER_AUTH",
    "KEY_CACHE_TTL",
    "PUBLIC",
    "AccessControl",
    "Authenticator",
    "ByMethod",
    "credential_check",
    "forbid_other_project",
    "hide_other_project",
    "is_public",
    "project_in_scope",
    "provide_principal",
    "require_role",
    "required_role",
    "role",
]

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
    address = connection.client.host if connection.client else ""
    # Only a key or session shown counts: a request with neither cannot be a guess.
    shown = bool(connection.headers.get("authorization") or connection.cookies.get(SESSION_COOKIE))
    if shown:
        authenticator.refuse_if_throttled(address)
    try:
        principal = await _who(connection)
    except NotAuthorizedException:
        if shown:
            authenticator.record_failure(address)
        raise
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


async def _who(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal of the request's key, or of its session cookie (a browser's): a
    request's own key comes first."""
    authenticator: Authenticator = connection.app.state[_STATE_KEY]
    authorization = connection.headers.get("authorization")
    session = None if authorization else connection.cookies.get(SESSION_COOKIE)
    if session:
        return await authenticator.principal_for_session(session)
    return await authenticator.principal_for(authorization)


def credential_check(
    connection: ASGIConnection[Any, Any, Any, Any],
) -> Callable[[], Awaitable[bool]]:
    """Whether the key or session this request came with still stands for someone: what a
    long answer (an event stream) asks now and then, so that a revoked key or a logout ends
    it. Any failure to tell counts as no."""

    async def still_valid() -> bool:
        try:
            await _who(connection)
        except NotAuthorizedException:
            return False
        except Exception:  # e.g. the database away once the cached answer expired
            return False
        return True

    return still_valid


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


def hide_other_project(principal: Principal, project_id: UUID | None, job_id: UUID) -> None:
    """404, worded as for a job that does not exist, when a project-scoped key reaches for a
    job of another project (or of none): a 403 told the key that the job exists."""
    if not principal.sees_project(project_id):
        raise OutOfScope(detail=f"no job with job_id {job_id}")


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

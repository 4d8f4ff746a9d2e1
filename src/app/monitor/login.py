"""Logging in to the monitor: a key entered once becomes a session (`app.auth.session`), whose
signed cookie the guard then accepts as it accepts the key; logging out ends the session.

The cookie is `HttpOnly` (no script reads it), `SameSite=Lax` (other sites' forms and
fetches do not carry it), `Secure` on HTTPS, and lives `SESSION_MAX_AGE` seconds.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Response, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from app.auth.guard import PUBLIC, Authenticator
from app.auth.keys import digest
from app.auth.session import SESSION_COOKIE, SessionCookies
from app.monitor.security import MONITOR_PATH, csp_headers

_KEY_MAX = 200  # characters of a key field; real keys are 47


class MonitorLogin:
    """What the login page needs: the app's authenticator and its session cookies."""

    def __init__(self, authenticator: Authenticator, cookies: SessionCookies) -> None:
        self.authenticator = authenticator
        self.cookies = cookies

    def cookie(self, request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
        return Cookie(
            key=SESSION_COOKIE,
            value=value,
            path="/",  # the API and /saq accept it too
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a page of the monitor or of /saq, nothing else."""
    if value and value.startswith(("/monitor", "/saq")) and "//" not in value and "\\" not in value:
        return value
    return MONITOR_PATH


def login_page(
    request: Request[Any, Any, Any],
    *,
    next_path: str,
    problem: str | None = None,
    status_code: int = 200,
    open_mode: bool = False,
) -> Template:
    return Template(
        template_name="login.html",
        context={"next": next_path, "problem": problem, "open_mode": open_mode, "principal": None},
        headers=csp_headers(),
        status_code=status_code,
    )


class MonitorLoginController(Controller):
    path = MONITOR_PATH
    opt = PUBLIC  # before a login there is no one to check
    include_in_schema = False

    @get("/login", name="monitor:login")
    async def login_form(
        self,
        request: Request[Any, Any, Any],
        monitor_login: NamedDependency[MonitorLogin],
        next_path: Annotated[str | None, QueryParameter(name="next")] = None,
    ) -> Template:
        """The login form: one field, the API key."""
        return login_page(
            request, next_path=safe_next(next_path), open_mode=monitor_login.authenticator.open_mode
        )

    @post("/login", status_code=HTTP_303_SEE_OTHER)
    async def login(
        self,
        request: Request[Any, Any, Any],
        monitor_login: NamedDependency[MonitorLogin],
        data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[Any]:
        """Check the key once; on success, the session cookie and the page asked for."""
        next_path = safe_next(data.get("next"))
        key = (data.get("key") or "").strip()[:_KEY_MAX]
        authenticator = monitor_login.authenticator
        address = request.client.host if request.client else ""
        try:
            authenticator.refuse_if_throttled(address)
        except TooManyRequestsException as exc:
            return login_page(request, next_path=next_path, problem=exc.detail, status_code=429)
        try:
            await authenticator.principal_for(f"Bearer {key}")
        except NotAuthorizedException:
            authenticator.record_failure(address)
            return login_page(
                request,
                next_path=next_path,
                problem="This key is unknown or revoked.",
                status_code=401,
            )
        if monitor_login.authenticator.open_mode:  # nothing to log in to
            return Redirect(next_path, status_code=HTTP_303_SEE_OTHER)
        value = await monitor_login.authenticator.start_session(digest(key))
        cookie = monitor_login.cookie(request, value, monitor_login.cookies.max_age)
        return Redirect(next_path, status_code=HTTP_303_SEE_OTHER, cookies=[cookie])

    @post("/logout", status_code=HTTP_303_SEE_OTHER, name="monitor:logout")
    async def logout(
        self, request: Request[Any, Any, Any], monitor_login: NamedDependency[MonitorLogin]
    ) -> Response[Any]:
        """End the session (here at once, in other API processes within the key cache time)
        and drop its cookie."""
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            await monitor_login.authenticator.end_session(session)
        cookie = monitor_login.cookie(request, "", 0)
        return Redirect(f"{MONITOR_PATH}/login", status_code=HTTP_303_SEE_OTHER, cookies=[cookie])

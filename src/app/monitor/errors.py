"""How the monitor's pages answer a refusal: a page to log in at, or a page that says why."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, NotAuthorizedException
from litestar.response import Redirect, Template

from app.monitor.security import MONITOR_PATH, csp_headers


def to_login(request: Request[Any, Any, Any], _: NotAuthorizedException) -> Response[Any]:
    """A page opened without a session goes to the login form, and back after it."""
    asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"{MONITOR_PATH}/login?next={quote(asked, safe='')}", status_code=303)


def error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A refusal or a missing job, as a page of the monitor rather than a JSON body."""
    return Template(
        template_name="error.html",
        context={"status_code": exc.status_code, "detail": exc.detail, "principal": None},
        headers=csp_headers(),
        status_code=exc.status_code,
    )


# ClientException too: the app maps it to a JSON body, and the most specific class wins.
PAGE_ERRORS: dict[Any, Any] = {
    NotAuthorizedException: to_login,
    ClientException: error_page,
    HTTPException: error_page,
}

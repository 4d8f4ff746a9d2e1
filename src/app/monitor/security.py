"""What a browser session needs beyond the guard: CSRF tokens, a same-origin rule for `/saq`,
and the Content-Security-Policy of the monitor's pages (docs/security.md).

A request is a browser's when it carries no `Authorization` header and either the session
cookie or a monitor address: only such a request can be forged by another site, since a
browser adds cookies by itself but never a key. API clients (a Bearer key) pass untouched,
so the API and its OpenAPI tests need no token. Browser requests go through Litestar's
`CSRFMiddleware` (double-submit token, checked on every unsafe method), except SAQ's UI,
whose script posts without a token: its unsafe calls must come from this origin.
"""

from __future__ import annotations

import secrets
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.auth.session import SESSION_COOKIE

MONITOR_PATH = "/monitor"
CSRF_COOKIE = "bgj_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "_csrf_token"  # the form field Litestar's middleware reads
# Only this app's own files: no inline script or style, no other origin, no framing.
CSP = "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def session_secret(configured: str | None) -> str:
    """SESSION_SECRET, or a random one for this process (its logins end when it stops)."""
    return configured or secrets.token_urlsafe(32)


def csrf_config(secret: str) -> CSRFConfig:
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_httponly=True,  # pages hand the token to their script in a <meta>
        cookie_samesite="lax",
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")


def same_origin(headers: Headers, scope: Scope) -> bool:
    """Whether the browser says the request comes from a page of this origin."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = headers.get("origin")
    host = headers.get("host")
    return origin is not None and host is not None and origin == f"{scope['scheme']}://{host}"


class BrowserRequestChecks:
    """Middleware: CSRF tokens for a browser's requests, same-origin for `saq_path`'s."""

    def __init__(self, config: CSRFConfig, saq_path: str | None) -> None:
        self.config = config
        self.saq_path = saq_path.rstrip("/") if saq_path else None

    def __call__(self, app: ASGIApp) -> ASGIApp:
        csrf = CSRFMiddleware(app=app, config=self.config)
        saq_path = self.saq_path

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            headers = Headers.from_scope(scope)
            path: str = scope["path"]
            if not _from_browser(headers, path):
                await app(scope, receive, send)
            elif saq_path is not None and _under(path, saq_path):
                method = str(scope.get("method", "GET"))
                if method not in _SAFE and not same_origin(headers, scope):
                    raise PermissionDeniedException(
                        detail="a browser session may change things only from this site's pages"
                    )
                await app(scope, receive, send)
            else:
                await csrf(scope, receive, send)

        return middleware


def _from_browser(headers: Headers, path: str) -> bool:
    if headers.get("authorization"):
        return False
    return _under(path, MONITOR_PATH) or _has_cookie(headers.get("cookie"), SESSION_COOKIE)


def _has_cookie(header: str | None, name: str) -> bool:
    if not header:
        return False
    return any(part.strip().startswith(f"{name}=") for part in header.split(";"))


def csp_headers() -> dict[str, Any]:
    """The headers every monitor page carries."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }

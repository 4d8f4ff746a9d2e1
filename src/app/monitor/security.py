"""What a browser session needs beyond the guard: CSRF tokens, a same-origin rule for `/saq`,
and the Content-Security-Policy of the monitor's pages (docs/security.md).

A request is a browser's when it carries no `Authorization` header and either the session
cookie or a monitor address: only such a request can be forged by another site, since a
browser adds cookies by itself but never a key. API clients (a Bearer key) pass untouched,
so the API and its OpenAPI tests need no token. Every unsafe browser request must say it
comes from this origin when its browser says where it comes from (`Sec-Fetch-Site`,
`Origin`), and carry a token:

- with a session, the session's own token: an HMAC of its id under the CSRF key, which the
  pages carry and no cookie does, so a token planted by a sibling site (a cookie it can
  set) or taken from another session is refused;
- without one (the login form), Litestar's `CSRFMiddleware` (double-submit cookie; its
  cookie `Secure` over HTTPS).

SAQ's UI posts without a token: its unsafe calls must come from this origin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from app.auth.session import SESSION_COOKIE, SessionCookies

MONITOR_PATH = "/monitor"
CSRF_COOKIE = "bgj_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "_csrf_token"  # the form field Litestar's middleware reads
# Only this app's own files: no inline script or style, no other origin, no framing.
CSP = "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


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


def from_elsewhere(headers: Headers, scope: Scope) -> bool:
    """Whether the browser says the request comes from another origin's page (a browser
    that says nothing is judged by its token alone)."""
    if headers.get("sec-fetch-site") is None and headers.get("origin") is None:
        return False
    return not same_origin(headers, scope)


_CSRF_REFUSED = "CSRF token verification failed"


class BrowserRequestChecks:
    """Middleware: CSRF tokens for a browser's requests, same-origin for `saq_path`'s."""

    def __init__(self, config: CSRFConfig, cookies: SessionCookies, saq_path: str | None) -> None:
        self.config = config
        self.cookies = cookies
        self._key = config.secret.encode()
        self.saq_path = saq_path.rstrip("/") if saq_path else None

    def session_token(self, session_id: str) -> str:
        """The CSRF token of a session: its pages carry it, its unsafe calls send it back."""
        return hmac.new(self._key, f"session {session_id}".encode(), hashlib.sha256).hexdigest()

    def __call__(self, app: ASGIApp) -> ASGIApp:
        # Before a login (no session): Litestar's double submit, its cookie Secure on HTTPS.
        anonymous = {
            https: CSRFMiddleware(
                app=app, config=dataclasses.replace(self.config, cookie_secure=https)
            )
            for https in (False, True)
        }
        saq_path = self.saq_path

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            headers = Headers.from_scope(scope)
            path: str = scope["path"]
            if not _from_browser(headers, path):
                await app(scope, receive, send)
                return
            unsafe = str(scope.get("method", "GET")) not in _SAFE
            if saq_path is not None and _under(path, saq_path):
                if unsafe and not same_origin(headers, scope):
                    raise PermissionDeniedException(
                        detail="a browser session may change things only from this site's pages"
                    )
                await app(scope, receive, send)
                return
            if unsafe and from_elsewhere(headers, scope):
                raise PermissionDeniedException(detail=_CSRF_REFUSED + ": another site's page")
            session_id = self._session_id(scope)
            if session_id is None:
                await anonymous[scope.get("scheme") == "https"](scope, receive, send)
                return
            expected = self.session_token(session_id)
            if unsafe and not hmac.compare_digest(
                await self._token_sent(scope, receive, headers), expected
            ):
                raise PermissionDeniedException(detail=_CSRF_REFUSED)
            ScopeState.from_scope(scope).csrf_token = expected  # what the pages carry
            await app(scope, receive, send)

        return middleware

    def _session_id(self, scope: Scope) -> str | None:
        request = scope["litestar_app"].request_class(scope=scope)
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.cookies.session_id(cookie) if cookie else None

    async def _token_sent(self, scope: Scope, receive: Receive, headers: Headers) -> str:
        """The token in the header, or in the form's field (a form posted by a page)."""
        token = headers.get(self.config.header_name)
        if token:
            return token
        request = scope["litestar_app"].request_class(scope=scope, receive=receive)
        if request.content_type[0] in _FORMS:
            form = await request.form()  # kept in the scope: the handler reads it again
            field = form.get(CSRF_FIELD)
            return field if isinstance(field, str) else ""
        return ""


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

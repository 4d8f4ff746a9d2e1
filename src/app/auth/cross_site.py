"""What keeps other web pages from driving the API through a visitor's browser (a leaf of
`app.auth`: it knows no key, no role, no session).

In open mode a request needs no key, so any page the visitor opens could make their browser
call the API: a cross-site `POST` with a `text/plain` or form body needs no CORS preflight,
and a page on a domain that re-resolves to 127.0.0.1 (DNS rebinding) is same-origin with the
API as far as the browser knows. `CrossSiteChecks` refuses, before any route runs:

- a `Host` that is not this machine's loopback name or one of `ALLOWED_HOSTS` (rebinding:
  the attacker's page can choose neither): in open mode always, with the checks on only when
  `ALLOWED_HOSTS` is set (there a request needs a key or a session, which a rebound page
  has neither of);
- in open mode, an unsafe request that its browser says comes from another site
  (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` other than the `Host`);
- in both modes, an unsafe request to the JSON API whose body is not JSON (a form or
  `text/plain` is what another site can send without a preflight). The monitor's own forms
  (under `/monitor`) carry a CSRF token instead (`app.monitor.security`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.exceptions import ClientException, PermissionDeniedException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import ASGIApp, Receive, Scope, Send

# The names a browser on this machine uses for it; ALLOWED_HOSTS adds to them.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_OTHER_SITES = frozenset({"cross-site", "same-site"})
_FORMS = "/monitor"  # its forms are urlencoded and carry a CSRF token
# The headers the checks read.
_WANTED = frozenset(
    {
        b"host",
        b"origin",
        b"sec-fetch-site",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
    }
)


def host_name(host: str) -> str:
    """`Host`'s name without its port, lower-cased (`[::1]:8000` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class CrossSiteChecks:
    """Middleware: the Host, Origin and content-type rules above, as JSON 4xx answers."""

    def __init__(self, *, open_mode: bool, allowed_hosts: Iterable[str]) -> None:
        extra = {host_name(host) for host in allowed_hosts}
        self.open_mode = open_mode
        self.any_host = "*" in extra
        self.allowed_hosts = LOOPBACK_HOSTS | extra
        self.check_host = not self.any_host and (open_mode or bool(extra))

    def __call__(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            # The trigger's hot path: a read with the checks on costs one comparison.
            if scope["type"] == ScopeType.HTTP and (
                self.check_host or str(scope.get("method", "GET")) not in _SAFE
            ):
                self.check(_wanted_headers(scope), scope)
            await app(scope, receive, send)

        return middleware

    def check(self, headers: Mapping[str, str], scope: Scope) -> None:
        host = headers.get("host", "")
        if self.check_host and host_name(host) not in self.allowed_hosts:
            raise ClientException(
                detail=f"Host {host!r} is not served here: add its name to ALLOWED_HOSTS",
                status_code=HTTP_400_BAD_REQUEST,
            )
        if str(scope.get("method", "GET")) in _SAFE:
            return
        if self.open_mode and from_another_site(headers, host):
            raise PermissionDeniedException(
                detail="open mode: a request from another site's page may not change anything"
            )
        content_type = headers.get("content-type")
        sends_body = content_type is not None or _has_body(headers)
        if sends_body and not is_json(content_type or "") and not _under(scope["path"], _FORMS):
            raise ClientException(
                detail="send the body as JSON (Content-Type: application/json), "
                f"not {content_type or 'without a Content-Type'}",
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )


def _wanted_headers(scope: Scope) -> dict[str, str]:
    """The few headers the checks read, in one pass over the raw ones (names lower-case)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _WANTED
    }


def from_another_site(headers: Mapping[str, str], host: str) -> bool:
    """Whether the browser says the request comes from another site's page."""
    if headers.get("sec-fetch-site", "").lower() in _OTHER_SITES:
        return True
    origin = headers.get("origin")
    if origin is None:
        return False  # not sent by a browser (curl, a script), or a same-origin GET
    return origin == "null" or urlsplit(origin).netloc.lower() != host.strip().lower()


def _has_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length")
    return bool(headers.get("transfer-encoding")) or (length is not None and length != "0")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}/")

"""The pages a person opens in a browser: the API docs at `/schema`, SAQ's UI at `/saq`.

Both must work on a closed network and at the addresses the README gives: the docs UI's
assets are served by the app itself (no CDN), and the bare `/saq` redirects to `/saq/`.
The docs and their assets are public; `/saq` needs a key (`app.auth.saq_web`). Every answer
says it may not be framed or sniffed and leaks no referrer (`SECURITY_HEADERS`); over HTTPS,
that the site is HTTPS only (HSTS); and the two UIs' pages get a Content-Security-Policy that
allows their own files and the inline scripts they were served with, nothing else
(`BrowserPolicies`; the monitor's pages carry their own, stricter one).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import cast

from litestar import Litestar, Router
from litestar.datastructures import MutableScopeHeaders, ResponseHeader
from litestar.enums import ScopeType
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response.base import ASGIResponse
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.guard import BEARER_AUTH, PUBLIC

# Swagger UI from the npm package swagger-ui-dist (Apache-2.0, LICENSE beside the files).
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"
DOCS_PATH = "/schema"
DOCS_ASSETS_PATH = f"{DOCS_PATH}/assets"


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    """Swagger UI at /schema (and /schema/swagger), loading only files this app serves."""
    assets = DOCS_ASSETS_PATH
    swagger = SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        favicon=f'<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">',
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        path=DOCS_PATH,
        openapi_router=Router(DOCS_PATH, route_handlers=[], include_in_schema=False, opt=PUBLIC),
        components=Components(
            security_schemes={
                BEARER_AUTH: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API key: `Authorization: Bearer <key>` (docs/security.md)",
                )
            }
        ),
        # Only renderers whose assets ship with the app: the others fetch from CDNs.
        render_plugins=[swagger, JsonRenderPlugin(), YamlRenderPlugin()],
    )


def describe_open_mode(app: Litestar) -> None:
    """An `on_startup` hook in open mode: the schema declares no key, since none is asked for.

    The controllers name the bearer scheme on every guarded operation; in open mode those
    operations answer without `Authorization`, and a schema that says otherwise is wrong
    (schemathesis' auth checks failed on each). The schema is built here, before the first
    request renders it, and its operations and components lose the scheme.
    """
    openapi = app.openapi_schema
    for item in (openapi.paths or {}).values():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            operation = getattr(item, method, None)
            if operation is not None:
                operation.security = None
    if openapi.components is not None and not isinstance(openapi.components, list):
        openapi.components.security_schemes = None


def docs_assets_router() -> Router:
    """Serves the vendored Swagger UI files under DOCS_ASSETS_PATH."""
    return create_static_files_router(
        path=DOCS_ASSETS_PATH,
        directories=[SWAGGER_UI_DIR],
        name="docs-assets",
        include_in_schema=False,
        opt=PUBLIC,
    )


class RedirectToTrailingSlash:
    """Middleware: a GET of exactly `path` is redirected to `path/`.

    Litestar routes `/saq` and `/saq/` to the same handler, but SAQ's UI script looks its
    page up by `location.pathname` and only knows `/saq/`, so the bare address showed a 404.
    """

    def __init__(self, path: str) -> None:
        self.path = path.rstrip("/")

    def __call__(self, app: ASGIApp) -> ASGIApp:
        bare = self.path

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            # Litestar has already dropped the trailing slash from scope["path"]: whether
            # the request had one is in raw_path (some clients leave the query on it).
            raw_path = scope.get("raw_path")
            if (
                scope["type"] != ScopeType.HTTP
                or scope["path"] != bare
                or scope["method"] not in ("GET", "HEAD")
                or not raw_path  # without it there is no telling: serve the page
                or raw_path.partition(b"?")[0].endswith(b"/")
            ):
                await app(scope, receive, send)
                return
            query = scope["query_string"].decode("latin-1")
            location = f"{scope.get('root_path', '')}{bare}/" + (f"?{query}" if query else "")
            redirect = ASGIResponse(
                status_code=308, headers={"location": location}, media_type="text/plain"
            )
            await redirect(scope, receive, send)

        return middleware


# On every answer: never framed (clickjacking), never sniffed as another type, no referrer
# to other sites. Set by handlers' answers unless they set their own.
SECURITY_HEADERS = [
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
]
HSTS = "max-age=31536000"  # a year; sent over HTTPS only (browsers ignore it over HTTP)
_INLINE = re.compile(rb"<(script|style)(?![^>]*\ssrc=)[^>]*>(.*?)</\1>", re.DOTALL | re.IGNORECASE)


def page_policy(html: bytes) -> str:
    """A CSP for a page: its own origin's files, and exactly the inline scripts and styles it
    holds (by hash), no framing."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        hashes[kind.lower()].append(f"'sha256-{digest}'")
    scripts = " ".join(["'self'", *hashes[b"script"]])
    styles = " ".join(["'self'", *hashes[b"style"]])
    return (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; "
        "img-src 'self' data:; font-src 'self' data:; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


class BrowserPolicies:
    """Middleware: HSTS on every answer over HTTPS; a CSP on the HTML pages under
    `html_paths` (SAQ's UI, the API docs) that lack one."""

    def __init__(self, *html_paths: str) -> None:
        self.html_paths = tuple(path.rstrip("/") for path in html_paths)

    def __call__(self, app: ASGIApp) -> ASGIApp:
        html_paths = self.html_paths

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            https = scope.get("scheme") == "https"
            path: str = scope["path"]
            html = any(path == base or path.startswith(f"{base}/") for base in html_paths)
            if not (https or html):
                await app(scope, receive, send)
                return
            await app(scope, receive, _policies(send, https=https, html=html))

        return middleware


def _policies(send: Send, *, https: bool, html: bool) -> Send:
    held: list[Message] = []  # an HTML page's start and body, until its body is whole

    async def send_with_policies(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableScopeHeaders.from_message(message)
            if https:
                headers["Strict-Transport-Security"] = HSTS
            content_type = headers.get("content-type") or ""
            if (
                html
                and content_type.startswith("text/html")
                and not headers.get("content-security-policy")
            ):
                held.append(message)
                return
        elif held and message["type"] == "http.response.body":
            held.append(message)
            if message.get("more_body", False):
                return
            start, *bodies = held
            held.clear()
            page = b"".join(cast("bytes", part.get("body", b"")) for part in bodies)
            MutableScopeHeaders.from_message(start)["Content-Security-Policy"] = page_policy(page)
            await send(start)
            await send({"type": "http.response.body", "body": page, "more_body": False})
            return
        await send(message)

    return send_with_policies

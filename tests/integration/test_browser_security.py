"""What a browser is told and held to: framing, sniffing and referrer headers on every answer,
HSTS and `Secure` cookies over HTTPS (as the app sees it, behind a TLS proxy too), and CSRF
tokens bound to their session."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import create_app
from app.auth.roles import Role
from app.auth.session import SESSION_COOKIE
from app.config import Settings
from app.monitor.security import CSRF_COOKIE, CSRF_HEADER
from tests.support import Servers, app_env
from tests.support.access import BOOTSTRAP_KEY, api, auth_settings, bearer, make_key

TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"|name="_csrf_token" value="([^"]+)"')
BULK = "/api/v1/jobs/bulk/retry"
SOME_JOB = {"job_ids": ["0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f"]}


def token_of(html: str) -> str:
    match = TOKEN.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1) or match.group(2)


def set_cookie(answer: Any, name: str) -> str:
    return next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{name}="))


def flags(cookie: str) -> set[str]:
    return {part.strip().lower() for part in cookie.split(";")[1:]}


@pytest.fixture
def settings(database_url: str, servers: Servers) -> Settings:
    return auth_settings(database_url, servers.redis_url)


@pytest.fixture
async def operator_key(settings: Settings) -> str:
    engine = create_async_engine(settings.database_url)
    try:
        return (await make_key(engine, Role.OPERATOR))[1]
    finally:
        await engine.dispose()


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def log_in(client: AsyncTestClient[Any], key: str) -> Any:
    form = await client.get("/monitor/login")
    return await client.post(
        "/monitor/login",
        data={"key": key, "next": "/monitor", "_csrf_token": token_of(form.text)},
        follow_redirects=False,
    )


@pytest.mark.parametrize(
    "path",
    ["/api/v1/jobs", "/health", "/schema", "/schema/openapi.json", "/saq/", "/monitor/login"],
)
async def test_every_answer_says_it_is_not_to_be_framed_sniffed_or_referred(
    app_client: AsyncTestClient[Any], path: str
) -> None:
    answer = await app_client.get(path, headers=bearer(BOOTSTRAP_KEY))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert "strict-transport-security" not in answer.headers  # plain HTTP


@pytest.mark.parametrize("path", ["/schema", "/saq/"])
async def test_the_docs_and_saqs_pages_allow_only_their_own_scripts(
    app_client: AsyncTestClient[Any], path: str
) -> None:
    answer = await app_client.get(path, headers=bearer(BOOTSTRAP_KEY))
    policy = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    inline = re.findall(r"<script(?![^>]*src=)[^>]*>(.*?)</script>", answer.text, re.DOTALL)
    assert inline, "the page has an inline script to allow"
    assert policy.count("'sha256-") >= len(inline)


async def test_over_https_the_cookies_are_secure_and_hsts_is_sent(
    settings: Settings, operator_key: str
) -> None:
    """HTTPS as the app sees it (the scheme of the request)."""
    async with AsyncTestClient(app=create_app(settings), base_url="https://testserver.local") as c:
        form = await c.get("/monitor/login")
        assert form.headers["strict-transport-security"].startswith("max-age=")
        assert "secure" in flags(set_cookie(form, CSRF_COOKIE))
        answer = await log_in(c, operator_key)
        assert answer.status_code == 303
        assert {"secure", "httponly", "samesite=lax"} <= flags(set_cookie(answer, SESSION_COOKIE))
    async with AsyncTestClient(app=create_app(settings)) as plain:
        form = await plain.get("/monitor/login")
        assert "secure" not in flags(set_cookie(form, CSRF_COOKIE))
        answer = await log_in(plain, operator_key)
        assert "secure" not in flags(set_cookie(answer, SESSION_COOKIE))


@pytest.mark.parametrize(("allowed", "secure"), [("127.0.0.1", True), ("10.9.8.7", False)])
async def test_behind_a_tls_proxy_the_cookies_are_secure_once_its_address_is_trusted(
    settings: Settings, allowed: str, secure: bool
) -> None:
    """uvicorn takes `X-Forwarded-Proto` only from FORWARDED_ALLOW_IPS (127.0.0.1 unless set):
    a proxy at another address (another container) must be listed there."""
    env = app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, FORWARDED_ALLOW_IPS=allowed)
    with api(env) as (_, port):
        # Cookies by hand: the proxy speaks HTTPS to the browser, plain HTTP to the app.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            proxied = {"X-Forwarded-Proto": "https"}
            form = await client.get("/monitor/login", headers=proxied)
            csrf = set_cookie(form, CSRF_COOKIE).split(";")[0]
            client.cookies.clear()
            answer = await client.post(
                "/monitor/login",
                data={"key": BOOTSTRAP_KEY, "next": "/monitor", "_csrf_token": token_of(form.text)},
                headers={**proxied, "Cookie": csrf},
            )
    assert answer.status_code == 303, answer.text
    assert ("secure" in flags(set_cookie(answer, SESSION_COOKIE))) is secure
    assert ("secure" in flags(set_cookie(form, CSRF_COOKIE))) is secure
    assert ("strict-transport-security" in form.headers) is secure


async def test_a_csrf_token_works_only_with_the_session_it_was_made_for(
    settings: Settings, operator_key: str
) -> None:
    """A sibling site can set cookies: it plants a valid pre-login token pair (or another
    session's token) in the victim's browser. The victim's session takes only its own."""
    shared = replace(settings, session_secret="one secret for both apps, 32 chars or more")  # noqa: S106
    async with (
        AsyncTestClient(app=create_app(shared)) as attacker,
        AsyncTestClient(app=create_app(shared)) as victim,
    ):
        await attacker.get("/monitor/login")
        planted = attacker.cookies[CSRF_COOKIE]  # a pair the double submit would accept
        await log_in(attacker, operator_key)
        others = token_of((await attacker.get("/monitor")).text)

        await log_in(victim, operator_key)
        own = token_of((await victim.get("/monitor")).text)
        victim.cookies.set(CSRF_COOKIE, planted)
        for token in (planted, others):
            refused = await victim.post(BULK, json=SOME_JOB, headers={CSRF_HEADER: token})
            assert refused.status_code == 403, refused.text
            assert "CSRF" in refused.json()["detail"]
        accepted = await victim.post(BULK, json=SOME_JOB, headers={CSRF_HEADER: own})
        assert accepted.status_code == 200, accepted.text


async def test_a_session_post_from_another_sites_page_is_refused_even_with_its_token(
    app_client: AsyncTestClient[Any], operator_key: str
) -> None:
    await log_in(app_client, operator_key)
    own = token_of((await app_client.get("/monitor")).text)
    for elsewhere in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        refused = await app_client.post(
            BULK, json=SOME_JOB, headers={CSRF_HEADER: own, **elsewhere}
        )
        assert refused.status_code == 403, refused.text
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver.local"}
    answer = await app_client.post(BULK, json=SOME_JOB, headers={CSRF_HEADER: own, **same})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("token", [None, "0" * 128], ids=["no token", "a made-up token"])
async def test_a_login_needs_the_login_pages_csrf_token(
    app_client: AsyncTestClient[Any], operator_key: str, token: str | None
) -> None:
    """Login CSRF: another site's form would log the visitor in with the attacker's key."""
    await app_client.get("/monitor/login")  # the double-submit cookie is set
    data = {"key": operator_key, "next": "/monitor"}
    answer = await app_client.post(
        "/monitor/login",
        data={**data, "_csrf_token": token} if token else data,
        follow_redirects=False,
    )
    assert answer.status_code == 403, answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")

"""The monitor's server side with the checks on, over HTTP: the session cookie's flags and
life, CSRF on a session's unsafe calls (and none for a key's), the same-origin rule of /saq,
roles, the CSP, and bad filters answered as pages, not 500s."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import create_app
from app.auth.keys import digest
from app.auth.roles import Role
from app.auth.session import SESSION_COOKIE, SessionCookies
from app.monitor.security import CSRF_COOKIE, CSRF_HEADER
from tests.support import Servers
from tests.support.access import BOOTSTRAP_KEY, auth_settings, bearer, make_key

TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"|name="_csrf_token" value="([^"]+)"')
ORIGIN = "http://testserver.local"
REDACT_KEYS = ("message", "password", "token", "secret", "api_key")  # `message` masked too


@dataclass
class Monitor:
    shared: AsyncTestClient[Any]  # one client (and one event loop) for the module's app
    viewer: str
    operator: str

    @asynccontextmanager
    async def client(self) -> AsyncIterator[AsyncTestClient[Any]]:
        """The client with no cookie: a new browser, as far as the app can tell."""
        self.shared.cookies.clear()
        try:
            yield self.shared
        finally:
            self.shared.cookies.clear()


@pytest.fixture(scope="module")
async def monitor(database_url: str, servers: Servers) -> AsyncIterator[Monitor]:
    settings = auth_settings(
        database_url, servers.redis_url, events_max_stream=0.2, redact_keys=REDACT_KEYS
    )
    engine = create_async_engine(settings.database_url)
    viewer = (await make_key(engine, Role.VIEWER))[1]
    operator = (await make_key(engine, Role.OPERATOR))[1]
    await engine.dispose()
    async with AsyncTestClient(app=create_app(settings), base_url=ORIGIN) as client:
        yield Monitor(client, viewer, operator)


def token_of(html: str) -> str:
    match = TOKEN.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1) or match.group(2)


async def log_in(client: AsyncTestClient[Any], key: str) -> Any:
    form = await client.get("/monitor/login")
    return await client.post(
        "/monitor/login",
        data={"key": key, "next": "/monitor", "_csrf_token": token_of(form.text)},
        follow_redirects=False,
    )


async def test_login_sets_a_signed_httponly_lax_cookie_and_logout_clears_it(
    monitor: Monitor,
) -> None:
    async with monitor.client() as client:
        answer = await log_in(client, monitor.viewer)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/monitor"
        cookie = next(
            header
            for header in answer.headers.get_list("set-cookie")
            if header.startswith(f"{SESSION_COOKIE}=")
        )
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/"} <= flags
        assert monitor.viewer not in cookie  # the key itself is never in the cookie
        assert digest(monitor.viewer) not in cookie  # nor its digest, which the table holds
        assert (await client.get("/monitor")).status_code == 200
        copied = client.cookies[SESSION_COOKIE]

        page = await client.get("/monitor")
        out = await client.post(
            "/monitor/logout", data={"_csrf_token": token_of(page.text)}, follow_redirects=False
        )
        assert out.status_code == 303
        cleared = next(
            h for h in out.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}=")
        )
        assert "max-age=0" in cleared.lower()
        assert SESSION_COOKIE not in client.cookies
        again = await client.get("/monitor", follow_redirects=False)
        assert again.status_code == 303
        assert again.headers["location"].startswith("/monitor/login?next=")
        # A copy of the cookie taken before the logout: the session itself has ended.
        client.cookies.set(SESSION_COOKIE, copied)
        assert (await client.get("/api/v1/jobs")).status_code == 401


def session_of(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


async def test_a_session_is_kept_by_the_server_not_by_what_a_dump_holds(
    database_url: str, servers: Servers
) -> None:
    """Two API processes (two apps, one Redis, one SESSION_SECRET): a login made in one works
    in the other, and a logout in one ends the session in the other. The cookie carries a
    session id, so the table's key digests with SESSION_SECRET forge nothing."""
    secret = "a session secret shared by both processes, 32+"  # noqa: S105 - a test value
    settings = auth_settings(database_url, servers.redis_url, session_secret=secret)
    engine = create_async_engine(settings.database_url)
    _, key = await make_key(engine, Role.VIEWER)
    await engine.dispose()
    async with (
        AsyncTestClient(app=create_app(settings), base_url=ORIGIN) as one,
        AsyncTestClient(app=create_app(settings), base_url=ORIGIN) as other,
    ):
        await log_in(one, key)
        first = one.cookies[SESSION_COOKIE]
        assert (await other.get("/api/v1/jobs", headers=session_of(first))).is_success
        one.cookies.clear()
        await log_in(one, key)
        second = one.cookies[SESSION_COOKIE]
        page = await one.get("/monitor")
        await one.post("/monitor/logout", data={"_csrf_token": token_of(page.text)})
        refused = await other.get("/api/v1/jobs", headers=session_of(second))
        assert refused.status_code == 401, "a logout in one process left the session in another"
        # What a database dump and SESSION_SECRET made a cookie of before: the key's digest,
        # an expiry and their HMAC.
        payload = f"{digest(key)}.{int(time.time()) + 3600}"
        signed = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        forged = await other.get("/api/v1/jobs", headers=session_of(f"{payload}.{signed}"))
        assert forged.status_code == 401


async def test_a_wrong_key_or_a_forged_cookie_gets_no_session(monitor: Monitor) -> None:
    async with monitor.client() as client:
        answer = await log_in(client, "bgj_" + "x" * 43)
        assert answer.status_code == 401
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
        forged = SessionCookies("another secret at least 32 chars long!!").issue()[1]
        client.cookies.set(SESSION_COOKIE, forged)
        assert (await client.get("/api/v1/jobs")).status_code == 401
        assert (await client.get("/monitor", follow_redirects=False)).status_code == 303


async def test_unsafe_calls_of_a_session_need_the_csrf_token_and_a_key_needs_none(
    monitor: Monitor,
) -> None:
    async with monitor.client() as client:
        await log_in(client, monitor.operator)
        page = await client.get("/monitor")
        assert page.status_code == 200
        body = {"job_ids": ["0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f"]}
        refused = await client.post("/api/v1/jobs/bulk/retry", json=body)
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["detail"]
        wrong = await client.post(
            "/api/v1/jobs/bulk/retry", json=body, headers={CSRF_HEADER: "0" * 128}
        )
        assert wrong.status_code == 403
        allowed = await client.post(
            "/api/v1/jobs/bulk/retry", json=body, headers={CSRF_HEADER: token_of(page.text)}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["not_found"] == 1
    async with monitor.client() as client:  # a key, no cookie: no token needed
        answer = await client.post(
            "/api/v1/jobs/bulk/retry", json=body, headers=bearer(monitor.operator)
        )
        assert answer.status_code == 200, answer.text
        assert CSRF_COOKIE not in answer.headers.get("set-cookie", "")


async def test_a_viewer_session_is_refused_an_action_even_with_a_valid_token(
    monitor: Monitor,
) -> None:
    async with monitor.client() as client:
        await log_in(client, monitor.viewer)
        page = await client.get("/monitor")
        assert 'id="bulk"' not in page.text
        assert "pick-row" not in page.text
        token = {CSRF_HEADER: token_of(page.text)}
        body = {"job_ids": ["0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f"]}
        answer = await client.post("/api/v1/jobs/bulk/cancel", json=body, headers=token)
        assert answer.status_code == 403
        assert "operator" in answer.json()["detail"]
        count = await client.get("/monitor/count?action=retry&status=failed")
        assert count.status_code == 403


async def test_saq_takes_a_session_and_its_posts_only_from_this_origin(monitor: Monitor) -> None:
    async with monitor.client() as client:
        await log_in(client, monitor.operator)
        page = await client.get("/saq/")
        assert page.status_code == 200
        assert 'href="/monitor"' in page.text
        retry = "/saq/api/queues/nope/jobs/nope/retry"
        assert (await client.post(retry)).status_code == 403
        cross = await client.post(retry, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        other = await client.post(retry, headers={"Origin": "https://evil.example"})
        assert other.status_code == 403
        same = await client.post(retry, headers={"Origin": ORIGIN})
        assert same.status_code == 404  # past the checks: SAQ knows no such queue


@pytest.mark.parametrize(
    "path",
    [
        "/monitor",
        "/monitor/",
        "/monitor/overview",
        "/monitor/cron",
        "/monitor/workers",
        "/monitor/login",
        "/monitor?q=%22",
    ],
)
async def test_every_monitor_page_carries_the_csp(monitor: Monitor, path: str) -> None:
    async with monitor.client() as client:
        await log_in(client, monitor.viewer)
        answer = await client.get(path)
        assert answer.status_code in (200, 400)
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert "<script>" not in answer.text
        assert " style=" not in answer.text


@pytest.mark.parametrize(
    "query",
    [
        "status=lost",
        "user_id=null",
        "cursor=xyz",
        "before=%00",
        "q=args.:x",
        "has_error=maybe",
        "limit=7",
        "q=%22open",
    ],
)
async def test_a_bad_filter_is_a_400_page_not_a_500(monitor: Monitor, query: str) -> None:
    async with monitor.client() as client:
        await log_in(client, monitor.viewer)
        answer = await client.get(f"/monitor?{query}")
        assert answer.status_code == 400
        assert 'class="problem" role="alert"' in answer.text
        rows = await client.get(f"/monitor/rows?ids=nope&{query}")
        assert rows.status_code == 400


async def test_an_unknown_job_is_a_404_page(monitor: Monitor) -> None:
    async with monitor.client() as client:
        await log_in(client, monitor.viewer)
        for path in ("/monitor/jobs/0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f", "/monitor/jobs/x"):
            answer = await client.get(path)
            assert answer.status_code == 404
            assert answer.headers["content-type"].startswith("text/html")


async def test_the_bootstrap_key_logs_in_and_next_stays_on_this_site(monitor: Monitor) -> None:
    async with monitor.client() as client:
        form = await client.get("/monitor/login")
        answer = await client.post(
            "/monitor/login",
            data={
                "key": BOOTSTRAP_KEY,
                "next": "//evil.example/x",
                "_csrf_token": token_of(form.text),
            },
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/monitor"


ROW_ID = re.compile(r'<tr id="job-([0-9a-f-]{36})"')


def pager_links(html: str) -> dict[str, str]:
    links = {}
    for match in re.finditer(r'<a class="button" rel="(prev|next)" href="([^"]+)"', html):
        links[match.group(1)] = match.group(2).replace("&amp;", "&")
    return links


async def test_older_and_newer_pages_walk_the_list_by_keyset(monitor: Monitor) -> None:
    async with monitor.client() as client:
        task = f"paging_{uuid4().hex[:8]}"
        for n in range(30):  # queued (no worker here): more than a page of 25
            answer = await client.post(
                "/api/v1/tasks/trigger-test",
                json={"message": f"{task} {n}", "sleep_seconds": 60},
                headers=bearer(monitor.operator),
            )
            assert answer.status_code == 202, answer.text
        await log_in(client, monitor.viewer)
        first = await client.get("/monitor?limit=25&status=queued")
        assert first.status_code == 200
        first_ids = ROW_ID.findall(first.text)
        assert len(first_ids) == 25
        links = pager_links(first.text)
        assert "prev" not in links
        older = await client.get(links["next"])
        older_ids = ROW_ID.findall(older.text)
        assert older_ids
        assert not set(older_ids) & set(first_ids)
        newer = await client.get(pager_links(older.text)["prev"])
        assert ROW_ID.findall(newer.text) == first_ids


@pytest.mark.parametrize("guess", ["right", "wrong"])
async def test_a_viewer_may_not_search_a_masked_argument_on_the_monitor(
    monitor: Monitor, guess: str
) -> None:
    """Else the search is an oracle: a right guess lists the job, a wrong one nothing."""
    secret = f"oracle-{uuid4().hex}"
    async with monitor.client() as client:
        answer = await client.post(
            "/api/v1/tasks/trigger-test",
            json={"message": secret, "sleep_seconds": 60},
            headers=bearer(monitor.operator),
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        asked = secret if guess == "right" else "oracle-nothing"
        query = f"q=args.message:{asked}"
        await log_in(client, monitor.viewer)
        for path in (f"/monitor?{query}", f"/monitor/rows?ids={job_id}&{query}"):
            refused = await client.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert job_id not in refused.text
            assert "masked" in refused.text
        api = await client.get(f"/api/v1/jobs?{query}", headers=bearer(monitor.viewer))
        assert api.status_code == 403  # the API's answer, which the monitor's matches

    async with monitor.client() as client:  # an operator sees it unmasked, so may search it
        await log_in(client, monitor.operator)
        found = await client.get(f"/monitor?{query}")
        assert found.status_code == 200
        assert (f'id="job-{job_id}"' in found.text) is (guess == "right")


async def test_revoking_a_key_ends_its_sessions(monitor: Monitor, database_url: str) -> None:
    """In the API process that revoked it at once (other processes: within the key cache
    time, tests/integration/test_auth.py and test_auth_streams.py)."""
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    key_id, key = await make_key(engine, Role.VIEWER)
    await engine.dispose()
    async with monitor.client() as client:
        await log_in(client, key)
        assert (await client.get("/monitor")).status_code == 200
        assert (await client.get("/api/v1/jobs")).status_code == 200
        revoked = await client.post(f"/api/v1/keys/{key_id}/revoke", headers=bearer(BOOTSTRAP_KEY))
        assert revoked.status_code == 200
        assert (await client.get("/api/v1/jobs")).status_code == 401
        page = await client.get("/monitor", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/monitor/login")

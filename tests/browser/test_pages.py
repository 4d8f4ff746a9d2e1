"""The README's addresses, opened in Chromium: what a person sees at `/saq` and `/schema`;
and what another site's page can make this browser do to the app in open mode (nothing).

An HTTP-level test sees a 200 for a page whose script then fails; these look at the page
the script built, with every request kept on the app's origin.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from uuid import uuid4

import pytest
from playwright.async_api import Browser, Playwright, async_playwright, expect

from tests.browser.conftest import CHROMIUM_ARGS
from tests.support import free_port
from tests.support.browser import RunningApp, Visit


def assert_held_to_its_own_origin(headers: dict[str, str]) -> None:
    """The page's policy, which Chromium then enforces: the page must still work under it
    (every test here fails on a console error, and a blocked script or style logs one)."""
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("address", ["/saq", "/saq/"])
async def test_saq_ui_shows_the_queue(visit: Visit, running_app: RunningApp, address: str) -> None:
    page = visit.page
    answer = await page.goto(f"{running_app.origin}{address}")
    assert answer is not None
    assert_held_to_its_own_origin(await answer.all_headers())

    assert page.url == f"{running_app.origin}/saq/"
    queue_row = page.locator("tbody tr", has_text=running_app.settings.queue_name)
    await expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    await expect(queue_row).to_be_visible()
    await expect(page.get_by_text("not found")).to_have_count(0)
    shot = await visit.screenshot(f"saq{address.replace('/', '-')}")
    print(f"screenshot: {shot}")
    visit.assert_stayed_home()


async def test_saq_ui_shows_a_triggered_job(visit: Visit, running_app: RunningApp) -> None:
    page = visit.page
    # Long enough that the job is still queued or active while the page is looked at.
    answer = await page.request.post(
        f"{running_app.origin}/api/v1/tasks/trigger-test",
        data={"message": "seen in the browser", "sleep_seconds": 120},
    )
    assert answer.status == 202, await answer.text()
    job_id = (await answer.json())["job_id"]

    await page.goto(f"{running_app.origin}/saq")
    queue_name = running_app.settings.queue_name
    await page.get_by_role("link", name=queue_name).click()

    assert page.url == f"{running_app.origin}/saq/queues/{queue_name}"
    job_row = page.locator("tbody tr", has_text=job_id)
    await expect(job_row).to_be_visible()
    await expect(job_row).to_contain_text("trigger_test")
    await expect(job_row).to_contain_text(re.compile(r"queued|active"))
    shot = await visit.screenshot("saq-queue-with-job")
    print(f"screenshot: {shot}")
    visit.assert_stayed_home()


@pytest.mark.parametrize("address", ["/schema", "/schema/swagger"])
async def test_api_docs_render_offline(visit: Visit, running_app: RunningApp, address: str) -> None:
    page = visit.page
    answer = await page.goto(f"{running_app.origin}{address}")
    assert answer is not None
    assert_held_to_its_own_origin(await answer.all_headers())

    await expect(page.get_by_role("heading", name="Tracked background jobs")).to_be_visible()
    trigger = page.locator(".opblock-summary", has_text="trigger-test").first
    await expect(trigger).to_be_visible()
    path_text = (await trigger.inner_text()).replace("\u200b", "")
    assert "/api/v1/tasks/trigger-test" in path_text
    assert "POST" in path_text
    spec = await (await page.request.get(f"{running_app.origin}/schema/openapi.json")).json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    await expect(page.locator(".opblock-summary-path")).to_have_count(operations)
    shot = await visit.screenshot(f"schema{address.replace('/', '-')}")
    print(f"screenshot: {shot}")
    visit.assert_stayed_home()


def jobs_with_message(origin: str, message: str) -> int:
    query = urllib.parse.urlencode({"q": f"args.message:{message}"})
    with urllib.request.urlopen(f"{origin}/api/v1/jobs?{query}", timeout=10) as answer:
        return len(json.loads(answer.read())["items"])


class _CatsPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>cats</title><p>cats"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def another_site() -> Iterator[str]:
    """A page of another site, served on this machine (so Chromium's rules for a public
    page reaching a private address do not stop its requests first: only the app may)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _CatsPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_another_sites_page_cannot_trigger_a_job_in_open_mode(
    browser: Browser, running_app: RunningApp
) -> None:
    """Chromium itself says where the request comes from (Origin, Sec-Fetch-Site); the page
    sends what needs no CORS preflight: `no-cors` POSTs with a text or form body."""
    context = await browser.new_context()
    page = await context.new_page()
    answers: list[int] = []
    page.on(
        "response",
        lambda response: answers.append(response.status) if "/api/" in response.url else None,
    )
    message = f"sent-from-another-site-{uuid4().hex}"
    with another_site() as site:
        await page.goto(f"{site}/cats")
        await page.evaluate(
            """async ([url, body]) => {
                for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
                    await fetch(url, {method: "POST", mode: "no-cors", body,
                                      headers: {"Content-Type": type}});
                }
            }""",
            [f"{running_app.origin}/api/v1/tasks/trigger-test", json.dumps({"message": message})],
        )
    await context.close()
    assert answers == [403, 403]
    assert jobs_with_message(running_app.origin, message) == 0


async def test_a_rebound_host_name_reads_nothing_in_open_mode(
    chromium_path: str, running_app: RunningApp
) -> None:
    """DNS rebinding: a name of the attacker's that now resolves to 127.0.0.1 makes their page
    same-origin with the API; Chromium is told so with a host resolver rule."""
    port = urllib.parse.urlsplit(running_app.origin).port
    playwright: Playwright
    async with async_playwright() as playwright:
        rebound = await playwright.chromium.launch(
            executable_path=chromium_path,
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebound.test 127.0.0.1"],
        )
        page = await (await rebound.new_context()).new_page()
        opened = await page.goto(f"http://rebound.test:{port}/api/v1/jobs")
        assert opened is not None
        assert opened.status == 400
        read = await page.evaluate(
            "async () => { const a = await fetch('/saq/api/queues');"
            " return [a.status, await a.text()]; }"
        )
        await rebound.close()
    assert read[0] == 400
    assert "ALLOWED_HOSTS" in read[1]
    assert "queues" not in json.loads(read[1])

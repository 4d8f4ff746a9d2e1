"""The monitor in a browser: an app with access checks on (a viewer's and an operator's key),
tabs that log in, and what every monitor page must hold (tests/browser/test_monitor*.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Browser, Response, expect

from tests.support import ROOT
from tests.support.browser import ARTIFACTS, Visit, watch

# The README's copies, refreshed only on request (UPDATE_SCREENSHOTS=1), so that a test run
# leaves the checkout as it found it.
SCREENSHOTS = ROOT / "docs" / "screenshots"
CSP = "default-src 'self'"


@dataclass
class MonitorApp:
    origin: str
    viewer_key: str
    operator_key: str
    queue_name: str


@dataclass
class MonitorTab(Visit):
    """A tab that also checks the headers of every monitor page it opens."""

    pages_without_csp: list[str] | None = None

    async def open(self, path: str) -> Response:
        response = await self.page.goto(f"{self.origin}{path}")
        assert response is not None
        return response

    async def login(self, key: str) -> None:
        await self.open("/monitor/login")
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Log in").click()
        await expect(self.page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()

    async def shot(self, name: str, *, full_page: bool = True) -> None:
        """A screenshot in the artifacts (and copied for the README with UPDATE_SCREENSHOTS=1)."""
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / path.name)

    def assert_monitor_pages_held_csp(self) -> None:
        assert self.pages_without_csp == [], (
            f"monitor pages without the CSP: {self.pages_without_csp}"
        )


@asynccontextmanager
async def monitor_tab(
    browser: Browser, origin: str, *, width: int = 1280, height: int = 900
) -> AsyncIterator[MonitorTab]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    tab = MonitorTab(page, origin, pages_without_csp=[])

    await watch(context, tab)

    def on_response(response: Response) -> None:
        request = response.request
        is_page = request.resource_type == "document" and response.status < 300
        if is_page and request.url.startswith(f"{origin}/monitor"):
            policy = response.headers.get("content-security-policy", "")
            if CSP not in policy:
                assert tab.pages_without_csp is not None
                tab.pages_without_csp.append(request.url)

    page.on("response", on_response)
    try:
        yield tab
    finally:
        await context.close()


async def trigger(tab: MonitorTab, key: str, **body: Any) -> str:
    """A job triggered through the API with a key (no session, so no CSRF token needed)."""
    answer = await tab.page.request.post(
        f"{tab.origin}/api/v1/tasks/trigger-test",
        data={"message": "from the monitor test", **body},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status == 202, await answer.text()
    return str((await answer.json())["job_id"])

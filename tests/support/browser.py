"""A browser tab on the running app, and the app it visits (used by tests/browser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import BrowserContext, ConsoleMessage, Page, Request, Route

from app.config import Settings
from tests.support.processes import app_and_worker  # the app it visits (tests/e2e use it too)
from tests.support.servers import ROOT

__all__ = ["ARTIFACTS", "RunningApp", "Visit", "app_and_worker", "watch"]

ARTIFACTS = ROOT / "tests" / "browser" / "artifacts"


@dataclass
class RunningApp:
    origin: str  # the README's form of address: http://localhost:<port>
    settings: Settings


@dataclass
class Visit:
    """One browser tab on the app, with everything it requested and logged."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_stayed_home(self) -> None:
        """Nothing left the app's origin and the page logged no error."""
        assert self.requests, "the page made no request at all"
        outside = [url for url in self.requests if not url.startswith(f"{self.origin}/")]
        assert outside == [], f"requests leaving {self.origin}: {outside}"
        assert self.refused == [], f"requests refused: {self.refused}"
        assert self.errors == [], f"console errors: {self.errors}"


async def watch(context: BrowserContext, visit: Visit) -> None:
    """Keep `visit`'s tab on a closed network (requests off its origin are refused and
    recorded) and record every request it makes and every error it logs."""

    async def closed_network(route: Route) -> None:
        if route.request.url.startswith(f"{visit.origin}/"):
            await route.continue_()
        else:
            visit.refused.append(route.request.url)
            await route.abort("internetdisconnected")

    def on_request(request: Request) -> None:
        visit.requests.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            visit.errors.append(f"{message.text} ({message.location.get('url')})")

    await context.route("**/*", closed_network)
    visit.page.on("request", on_request)
    visit.page.on("console", on_console)
    visit.page.on("pageerror", lambda error: visit.errors.append(f"uncaught: {error}"))

"""A browser tab on the running app, and the app it visits (used by tests/browser)."""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import BrowserContext, ConsoleMessage, Page, Request, Route

from app.config import Settings
from tests.support.processes import Running
from tests.support.servers import APP, ROOT, VENV_BIN, free_port

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


def wait_until_serving(origin: str, api: Running) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{origin}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline or api.process.poll() is not None:
                raise AssertionError(f"api did not start:\n{api.output[-3000:]}") from None
        time.sleep(0.2)


@contextlib.contextmanager
def app_and_worker(env: dict[str, str]) -> Iterator[str]:
    """The API on a free port and one worker, both started with `env`; yields the API's
    origin in the README's form (http://localhost:<port>) once both serve."""
    port = free_port()
    origin = f"http://localhost:{port}"
    worker = Running([str(VENV_BIN / "litestar"), "--app", APP, "workers", "run"], env, "worker")
    api = Running(
        [str(VENV_BIN / "uvicorn"), "--factory", APP, "--host", "127.0.0.1", "--port", str(port)],
        env,
        "api",
    )
    try:
        worker.wait_for_line(lambda line: '"worker started"' in line)
        wait_until_serving(origin, api)
        yield origin
    finally:
        for process in (api, worker):
            process.stop()


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

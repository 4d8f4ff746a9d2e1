"""A real browser on the real app: Debian's Chromium, driven by Playwright, on a closed network.

The API (uvicorn) and a worker run as processes, started as the README starts them. Every
page records what it requested and what it logged, and any request that would leave the
app's origin is refused, as it would be on a network without internet access.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    async_playwright,
)

from tests.support import (
    Servers,
    app_env,
    create_database,
    drop_database,
    make_settings,
    migrate,
)
from tests.support.browser import ARTIFACTS, RunningApp, Visit, app_and_worker, watch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox: the tests run as root; the rest keeps Chromium from calling home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def running_app(servers: Servers) -> Iterator[RunningApp]:
    """The API on a free port and one worker, on a fresh migrated database."""
    database = create_database(servers)
    database_url = servers.database_url(database)
    migrate(database_url)
    settings = make_settings(database_url, servers.redis_url)
    try:
        with app_and_worker(app_env(settings)) as origin:
            yield RunningApp(origin, settings)
    finally:
        drop_database(servers, database)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, never Playwright's own download (`make test` installs it as root)."""
    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install chromium"
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium_path: str, artifacts: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def visit(browser: Browser, running_app: RunningApp) -> AsyncIterator[Visit]:
    context: BrowserContext = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    seen = Visit(page, running_app.origin)
    await watch(context, seen)
    yield seen
    await context.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    shots = sorted(ARTIFACTS.glob("*.png")) if ARTIFACTS.is_dir() else []
    if shots:
        terminalreporter.write_line(f"browser screenshots ({len(shots)}): {ARTIFACTS}")

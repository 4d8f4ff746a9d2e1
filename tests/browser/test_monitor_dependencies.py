"""A job's page in Chromium shows the jobs it waits for and those waiting for it (`after=`),
with their statuses and links, and follows them as they run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth.roles import Role
from tests.browser.monitor_support import MonitorApp, MonitorTab, monitor_tab, trigger
from tests.support import Servers, app_env, create_database, drop_database, eventually, migrate
from tests.support.access import BOOTSTRAP_KEY, auth_settings, make_key
from tests.support.browser import app_and_worker

LIVE = 20_000  # ms an assertion waits for what the worker does


async def ended(tab: MonitorTab, job_id: str) -> bool:
    answer = await tab.page.request.get(f"{tab.origin}/api/v1/jobs/{job_id}")
    return bool((await answer.json())["status"] == "complete")


@pytest.fixture(scope="module")
def monitor_app(servers: Servers) -> Iterator[MonitorApp]:
    database = create_database(servers)
    database_url = servers.database_url(database)
    migrate(database_url)
    settings = auth_settings(database_url, servers.redis_url)

    async def operator() -> str:
        engine = create_async_engine(settings.database_url)
        try:
            return (await make_key(engine, Role.OPERATOR))[1]
        finally:
            await engine.dispose()

    key = asyncio.run(operator())
    try:
        with app_and_worker(app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY)) as origin:
            yield MonitorApp(origin, key, key, settings.queue_name)
    finally:
        drop_database(servers, database)


async def test_a_jobs_page_lists_its_parents_and_children_with_statuses_and_links(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    key = monitor_app.operator_key
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        await tab.login(key)
        first = await trigger(tab, key, message="extract", sleep_seconds=8)
        second = await trigger(tab, key, message="load", sleep_seconds=0.2)
        both = await trigger(tab, key, message="report", sleep_seconds=0, after=[first, second])
        later = await trigger(tab, key, message="notify", sleep_seconds=0, after=[both])

        await tab.open(f"/monitor/jobs/{both}")
        await expect(page.locator("#job-status .status-text")).to_have_text("waiting")
        parents = page.locator("#job-parents li")
        await expect(parents).to_have_count(2)
        await expect(page.locator("#job-children li")).to_have_count(1)
        await expect(page.locator("#job-children")).to_contain_text("waiting")
        await eventually(lambda: ended(tab, second), what="`load` to complete")
        await tab.open(f"/monitor/jobs/{both}")  # `extract` still runs: both as they are now
        await expect(page.locator("#job-parents .status-complete")).to_have_count(1)
        await expect(page.locator("#job-parents .status-running")).to_have_count(1)
        await tab.shot("monitor-job-dependencies")

        await page.locator("#job-children").get_by_role("link", name=later).click()
        await expect(page.locator("#job-parents")).to_contain_text(both)
        await page.locator("#job-parents").get_by_role("link", name=both).click()
        await expect(page.locator("#job-status .status-text")).to_have_text(
            "complete", timeout=LIVE
        )  # the page follows the job itself live
        await tab.open(f"/monitor/jobs/{both}")
        await expect(page.locator("#job-parents .status-complete")).to_have_count(2)
        await tab.open(f"/monitor/jobs/{later}")
        await expect(page.locator("#job-status .status-text")).to_have_text(
            "complete", timeout=LIVE
        )
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_a_waiting_jobs_page_follows_it_when_its_parent_is_cancelled(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    """The child's end is written in SQL by the cascade, not by a worker: its page still
    shows it live (the stream sends it), with the parent named."""
    key = monitor_app.operator_key
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        await tab.login(key)
        parent = await trigger(tab, key, message="extract", sleep_seconds=30)
        child = await trigger(tab, key, message="load", sleep_seconds=0, after=[parent])
        await tab.open(f"/monitor/jobs/{child}")
        await expect(page.locator("#job-status .status-text")).to_have_text("waiting")
        answer = await page.request.post(
            f"{tab.origin}/api/v1/jobs/{parent}/cancel",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status == 202, await answer.text()
        await expect(page.locator("#job-status .status-text")).to_have_text("aborted", timeout=LIVE)
        await expect(page.locator("#job-panel")).to_contain_text(f"parent job {parent}")
        await tab.shot("monitor-job-aborted-with-its-parent")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()

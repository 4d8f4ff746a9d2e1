"""The cron and workers pages in Chromium, with access checks on: an operator pauses and
resumes a schedule from the page, a viewer sees no button and its forged pause is refused; the
workers page shows the live worker, the job it runs (a link to the job's page) and a worker
that stopped reporting with a job still running on it.

The app is the test app with two schedules (each second, and nightly) and one worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.auth.roles import Role
from app.config import Settings
from app.db.models import BackgroundJob
from tests.browser.monitor_support import MonitorApp, MonitorTab, monitor_tab, trigger
from tests.support import Servers, app_env, create_database, drop_database, migrate
from tests.support.access import BOOTSTRAP_KEY, auth_settings, make_key
from tests.support.app import TEST_CRON_APP
from tests.support.browser import app_and_worker

LIVE = 20_000  # ms an assertion waits for a redraw (the pages redraw every 5 or 10 s)
SECONDLY = "every_second"
NIGHTLY = "nightly_cleanup"


@pytest.fixture(scope="module")
def ops_app(servers: Servers) -> Iterator[tuple[MonitorApp, Settings]]:
    """The cron test app's API and a worker, access checks on, a viewer's and an operator's key."""
    database = create_database(servers)
    database_url = servers.database_url(database)
    migrate(database_url)
    settings = auth_settings(database_url, servers.redis_url)

    async def keys() -> tuple[str, str]:
        engine = create_async_engine(settings.database_url)
        try:
            viewer = (await make_key(engine, Role.VIEWER))[1]
            return viewer, (await make_key(engine, Role.OPERATOR))[1]
        finally:
            await engine.dispose()

    viewer, operator = asyncio.run(keys())
    env = app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY)
    try:
        with app_and_worker(env, app=TEST_CRON_APP) as origin:
            yield MonitorApp(origin, viewer, operator, settings.queue_name), settings
    finally:
        drop_database(servers, database)


def schedule(tab: MonitorTab, name: str):  # type: ignore[no-untyped-def]
    return tab.page.locator(f"#schedule-{name}")


async def test_an_operator_pauses_and_resumes_a_schedule_from_the_cron_page(
    browser: Browser, ops_app: tuple[MonitorApp, Settings]
) -> None:
    app, _ = ops_app
    async with monitor_tab(browser, app.origin) as tab:
        page = tab.page
        await tab.login(app.operator_key)
        await page.get_by_role("link", name="Cron", exact=True).click()
        await expect(page.get_by_role("heading", name="Cron", exact=True)).to_be_visible()
        secondly, nightly = schedule(tab, SECONDLY), schedule(tab, NIGHTLY)
        await expect(secondly.locator(".runs-table .status-complete").first).to_be_visible(
            timeout=LIVE
        )
        await expect(nightly.locator(".state")).to_have_text("● active")
        await expect(nightly.locator(".runs-table .status-queued")).to_have_count(1, timeout=LIVE)
        await expect(nightly.locator(".next-run")).to_contain_text("03:00:00")

        await nightly.get_by_role("button", name="Pause").click()
        await expect(nightly.locator(".state")).to_have_text("❚❚ paused")
        await expect(nightly.locator(".schedule-result")).to_contain_text("paused by")
        await expect(nightly.locator(".paused-by")).to_contain_text(app.operator_key[:12])
        # The run that waited for 03:00 is withdrawn by a worker: the next redraw shows it.
        await expect(nightly.locator(".runs-table .status-aborted")).to_have_count(1, timeout=LIVE)
        await expect(nightly.get_by_role("button", name="Resume")).to_be_visible()
        await tab.shot("monitor-cron")

        await nightly.get_by_role("button", name="Resume").click()
        await expect(nightly.locator(".state")).to_have_text("● active")
        await expect(nightly.get_by_role("button", name="Pause")).to_be_visible()
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_a_viewer_sees_no_pause_button_and_its_forged_pause_is_refused(
    browser: Browser, ops_app: tuple[MonitorApp, Settings]
) -> None:
    app, _ = ops_app
    async with monitor_tab(browser, app.origin) as tab:
        page = tab.page
        await tab.login(app.viewer_key)
        await tab.open("/monitor/cron")
        await expect(schedule(tab, SECONDLY)).to_be_visible()
        await expect(page.locator("button[data-schedule-action]")).to_have_count(0)
        token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
        assert token
        forged = await page.request.post(
            f"{app.origin}/api/v1/schedules/{SECONDLY}/pause", headers={"x-csrf-token": token}
        )
        assert forged.status == 403, await forged.text()
        assert "operator" in (await forged.json())["detail"]
        await expect(schedule(tab, SECONDLY).locator(".state")).to_have_text("● active")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_the_workers_page_shows_the_worker_its_job_and_a_lost_worker(
    browser: Browser, ops_app: tuple[MonitorApp, Settings]
) -> None:
    app, settings = ops_app
    # What a worker killed mid-job leaves behind: its record gone from Redis, its row running
    # (changed "later", so that the module's reconciler leaves it alone while the page shows it;
    # tests/e2e/test_lost_worker_flagged.py kills a real worker).
    lost_job, lost_worker = uuid4(), str(uuid4())
    engine = create_async_engine(settings.database_url)
    async with AsyncSession(engine) as session:
        session.add(
            BackgroundJob(
                job_id=lost_job,
                task_name="trigger_test",
                queue=settings.queue_name,
                status="running",
                attempts=1,
                worker_id=lost_worker,
                started_at=datetime.now(UTC) - timedelta(minutes=3),
                updated_at=datetime.now(UTC) + timedelta(minutes=10),
            )
        )
        await session.commit()
    await engine.dispose()

    async with monitor_tab(browser, app.origin) as tab:
        page = tab.page
        job_id = await trigger(tab, app.operator_key, sleep_seconds=60)
        await tab.login(app.viewer_key)
        await page.get_by_role("link", name="Workers", exact=True).click()
        await expect(page.get_by_role("heading", name="Workers", exact=True)).to_be_visible()
        live = page.locator(".workers-table tbody tr")
        await expect(live).to_have_count(1)
        await expect(live.locator(".heartbeat")).to_contain_text("ago")
        link = live.locator(f'a[href="/monitor/jobs/{job_id}"]')
        await expect(link).to_be_visible(timeout=LIVE)
        flagged = page.locator(f"#lost-{lost_worker}")
        await expect(flagged).to_contain_text("1 job(s) still running on it")
        await expect(flagged.locator(f'a[href="/monitor/jobs/{lost_job}"]')).to_be_visible()
        await tab.shot("monitor-workers")

        await link.click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("trigger_test")
        await expect(page.locator("#job-status .status-text")).to_have_text("running")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


@pytest.mark.parametrize("path", ["/monitor/cron", "/monitor/workers"])
async def test_the_pages_fit_a_phone(
    browser: Browser, ops_app: tuple[MonitorApp, Settings], path: str
) -> None:
    app, _ = ops_app
    async with monitor_tab(browser, app.origin, width=390, height=844) as tab:
        await tab.login(app.operator_key)
        await tab.open(path)
        await expect(tab.page.locator("#live-body")).to_be_visible()
        width = await tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways at phone width ({width} px)"
        tab.assert_stayed_home()


async def test_an_operator_pauses_and_resumes_a_queue_from_the_overview(
    browser: Browser, ops_app: tuple[MonitorApp, Settings]
) -> None:
    """Catches: a button that acts without its confirmation, a pause the page does not show
    (by whom, since when), a paused queue whose jobs are still taken, a viewer's button."""
    app, _ = ops_app
    async with monitor_tab(browser, app.origin) as tab:
        page = tab.page
        await tab.login(app.operator_key)
        await page.get_by_role("link", name="Overview", exact=True).click()
        row = page.locator(f"#queue-{app.queue_name}")
        await expect(row.locator(".state")).to_have_text("● taking jobs")

        await row.get_by_role("button", name="Pause…").click()
        dialog = page.locator("#confirm")
        await expect(dialog).to_contain_text(f"Pause queue {app.queue_name}?")
        await dialog.get_by_role("button", name="Keep it as it is").click()
        await expect(row.locator(".state")).to_have_text("● taking jobs")  # nothing was done

        await row.get_by_role("button", name="Pause…").click()
        await dialog.get_by_role("button", name="Yes, do it").click()
        await expect(row.locator(".state")).to_have_text("❚❚ paused")
        await expect(row.locator(".paused-by")).to_contain_text(app.operator_key[:12])
        waiting = await trigger(tab, app.operator_key)
        await asyncio.sleep(3)  # the worker would have taken it by now
        await tab.open("/monitor/overview")
        await expect(row.locator(".state")).to_have_text("❚❚ paused")
        await expect(row.get_by_role("button", name="Resume…")).to_be_visible()
        await tab.shot("monitor-queue-paused")
        job = await page.request.get(
            f"{app.origin}/api/v1/jobs/{waiting}",
            headers={"Authorization": f"Bearer {app.operator_key}"},
        )
        assert (await job.json())["status"] == "queued"

        await row.get_by_role("button", name="Resume…").click()
        await expect(dialog).to_contain_text(f"Resume queue {app.queue_name}?")
        await dialog.get_by_role("button", name="Yes, do it").click()
        await expect(row.locator(".state")).to_have_text("● taking jobs")
        await tab.open(f"/monitor/jobs/{waiting}")
        await expect(page.locator("#job-status .status-text")).to_have_text(
            "complete", timeout=LIVE
        )
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()

    async with monitor_tab(browser, app.origin) as tab:
        await tab.login(app.viewer_key)
        await tab.open("/monitor/overview")
        await expect(tab.page.locator(f"#queue-{app.queue_name}")).to_be_visible()
        await expect(tab.page.locator("button[data-queue-action]")).to_have_count(0)
        token = await tab.page.locator('meta[name="csrf-token"]').get_attribute("content")
        forged = await tab.page.request.post(
            f"{app.origin}/api/v1/queues/{app.queue_name}/pause",
            headers={"x-csrf-token": token or ""},
        )
        assert forged.status == 403, await forged.text()

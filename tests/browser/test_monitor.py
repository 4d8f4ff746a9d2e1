"""The monitor at /monitor in Chromium, with access checks on: what a viewer and an operator
see and may do, live updates without a reload, filters in the URL, and /saq after a login.

Every tab refuses requests that would leave the app's origin and records console errors;
every monitor page it opens must carry the Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth.roles import Role
from tests.browser.monitor_support import MonitorApp, MonitorTab, monitor_tab, trigger
from tests.support import (
    Servers,
    app_env,
    create_database,
    drop_database,
    eventually,
    migrate,
)
from tests.support.access import BOOTSTRAP_KEY, auth_settings, make_key
from tests.support.browser import app_and_worker

LIVE = 20_000  # ms an assertion waits for what the live stream brings
# The app masks `message` for viewers too, so that a job triggered here has a masked argument.
REDACT_KEYS = "message,password,token,secret,api_key"


@pytest.fixture(scope="module")
def monitor_app(servers: Servers) -> Iterator[MonitorApp]:
    """The API and a worker with access checks on, and a viewer's and an operator's key."""
    database = create_database(servers)
    database_url = servers.database_url(database)
    migrate(database_url)
    settings = auth_settings(database_url, servers.redis_url)

    async def keys() -> tuple[str, str]:
        engine = create_async_engine(settings.database_url)
        try:
            return (await make_key(engine, Role.VIEWER))[1], (
                await make_key(engine, Role.OPERATOR)
            )[1]
        finally:
            await engine.dispose()

    viewer, operator = asyncio.run(keys())
    try:
        env = app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, REDACT_KEYS=REDACT_KEYS)
        with app_and_worker(env) as origin:
            yield MonitorApp(origin, viewer, operator, settings.queue_name)
    finally:
        drop_database(servers, database)


def row(tab: MonitorTab, job_id: str):  # type: ignore[no-untyped-def]
    return tab.page.locator(f"#job-{job_id}")


async def test_login_page(browser: Browser, monitor_app: MonitorApp) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        answer = await tab.open("/monitor")
        assert tab.page.url.startswith(f"{monitor_app.origin}/monitor/login?next=")
        assert answer.status == 200
        await tab.page.get_by_label("API key").fill("bgj_not-a-key")
        await tab.page.get_by_role("button", name="Log in").click()
        await expect(tab.page.get_by_role("alert")).to_contain_text("unknown or revoked")
        await tab.page.get_by_label("API key").fill("")
        await tab.shot("monitor-login")
        tab.assert_monitor_pages_held_csp()
        tab.errors = [e for e in tab.errors if "401" not in e]  # the refused login's answer
        tab.assert_stayed_home()


async def test_operator_watches_jobs_live_and_retries_a_failure(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        await tab.login(monitor_app.operator_key)
        await expect(page.locator("#live-state")).to_have_text("● live", timeout=LIVE)

        job_id = await trigger(tab, monitor_app.operator_key, sleep_seconds=1.5)
        await expect(row(tab, job_id)).to_be_visible(timeout=LIVE)
        await expect(row(tab, job_id).locator(".status-text")).to_have_text(
            "complete", timeout=LIVE
        )
        failed_id = await trigger(tab, monitor_app.operator_key, fail=True)
        await expect(row(tab, failed_id).locator(".status-text")).to_have_text(
            "failed", timeout=LIVE
        )
        await expect(row(tab, failed_id)).to_contain_text("TestTaskFailure")

        await row(tab, job_id).get_by_role("link", name=re.compile(job_id[:8])).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("trigger_test")
        await expect(page.locator("pre.json").last).to_contain_text(
            '"message": "from the monitor test"'
        )
        await expect(page.locator(".runs rect.current")).to_have_count(1)

        await tab.open(f"/monitor/jobs/{failed_id}")
        await expect(page.locator("#job-attempts")).to_have_text("1 of 1")
        await expect(page.locator("pre.error-text").first).to_contain_text("TestTaskFailure")
        traceback = page.locator("pre.traceback").first
        await expect(traceback).to_be_hidden()  # collapsed until asked for
        await page.get_by_text("Traceback", exact=True).first.click()
        await expect(traceback).to_contain_text("Traceback (most recent call last)")

        await page.get_by_role("button", name="Retry").click()
        await expect(page.locator("#job-attempts")).to_have_text("2 of 2", timeout=LIVE)
        await expect(page.locator("#job-status .status-text")).to_have_text("failed", timeout=LIVE)
        await expect(page.locator("ol.errors > li")).to_have_count(3, timeout=LIVE)
        await tab.shot("monitor-job")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_operator_acts_on_a_selection(browser: Browser, monitor_app: MonitorApp) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        await tab.login(monitor_app.operator_key)
        failed = [await trigger(tab, monitor_app.operator_key, fail=True) for _ in range(2)]
        for job_id in failed:
            await expect(row(tab, job_id).locator(".status-text")).to_have_text(
                "failed", timeout=LIVE
            )

        await row(tab, failed[0]).locator(".pick-row").check()
        await page.get_by_role("button", name="Retry selected").click()
        await expect(page.locator("#confirm-text")).to_have_text("retry 1 selected job(s)?")
        await page.get_by_role("button", name="Yes, do it").click()
        await expect(page.locator("#bulk-result")).to_have_text("retry: 1 done, 0 skipped")

        async def retried_job_failed_again() -> bool:
            answer = await page.request.get(
                f"{monitor_app.origin}/api/v1/jobs/{failed[0]}",
                headers={"Authorization": f"Bearer {monitor_app.operator_key}"},
            )
            job = await answer.json()
            return job["status"] == "failed" and job["attempts"] == 2

        await eventually(retried_job_failed_again, what="the retried job to fail again")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def job_of(tab: MonitorTab, key: str, job_id: str) -> dict[str, Any]:
    answer = await tab.page.request.get(
        f"{tab.origin}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
    )
    return dict(await answer.json())


async def test_operator_retries_all_failed_jobs_of_a_filter_and_only_those(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    """ "Retry all…" acts on what the page's filters match (the server turns them into the
    bulk filter): here two failed jobs of one user, not a third of another user."""
    key = monitor_app.operator_key
    user, other = str(uuid4()), str(uuid4())
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        mine = [await trigger(tab, key, fail=True, user_id=user) for _ in range(2)]
        theirs = await trigger(tab, key, fail=True, user_id=other)

        async def all_failed() -> bool:
            jobs = [await job_of(tab, key, job_id) for job_id in [*mine, theirs]]
            return all(job["status"] == "failed" for job in jobs)

        await eventually(all_failed, what="the three jobs failed")
        await tab.login(key)
        await tab.open(f"/monitor?status=failed&user_id={user}")
        await page.get_by_role("button", name="Retry all…").click()
        await expect(page.locator("#confirm-text")).to_have_text(
            "retry 2 job(s) matching this filter?"
        )
        await page.get_by_role("button", name="Yes, do it").click()
        await expect(page.locator("#bulk-result")).to_have_text("retry: 2 done, 0 skipped")

        async def mine_ran_again() -> bool:
            jobs = [await job_of(tab, key, job_id) for job_id in mine]
            return all(job["attempts"] == 2 and job["status"] == "failed" for job in jobs)

        await eventually(mine_ran_again, what="the filter's jobs retried and failed again")
        untouched = await job_of(tab, key, theirs)
        assert (untouched["status"], untouched["attempts"]) == ("failed", 1), untouched
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_operator_cancels_all_unfinished_jobs_of_a_filter_and_only_those(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    key = monitor_app.operator_key
    user, other = str(uuid4()), str(uuid4())
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        mine = [await trigger(tab, key, sleep_seconds=60, user_id=user) for _ in range(2)]
        theirs = await trigger(tab, key, sleep_seconds=60, user_id=other)
        await tab.login(key)
        await tab.open(f"/monitor?user_id={user}")
        await page.get_by_role("button", name="Cancel all…").click()
        await expect(page.locator("#confirm-text")).to_have_text(
            "cancel 2 job(s) matching this filter?"
        )
        await page.get_by_role("button", name="Yes, do it").click()
        await expect(page.locator("#bulk-result")).to_have_text("cancel: 2 done, 0 skipped")

        async def mine_aborted() -> bool:
            jobs = [await job_of(tab, key, job_id) for job_id in mine]
            return all(job["status"] == "aborted" for job in jobs)

        await eventually(mine_aborted, what="the filter's jobs aborted")
        untouched = await job_of(tab, key, theirs)
        assert untouched["status"] in ("queued", "running"), untouched
        freed = await page.request.post(
            f"{monitor_app.origin}/api/v1/jobs/{theirs}/cancel",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert freed.status == 202  # frees the worker's slot
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_viewer_sees_no_buttons_and_a_forged_post_is_refused(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        failed_id = await trigger(tab, monitor_app.operator_key, fail=True)
        await tab.login(monitor_app.viewer_key)
        await expect(row(tab, failed_id).locator(".status-text")).to_have_text(
            "failed", timeout=LIVE
        )
        await expect(page.locator("#bulk")).to_have_count(0)
        await expect(page.locator(".pick-row")).to_have_count(0)
        await tab.open(f"/monitor/jobs/{failed_id}")
        await expect(page.locator("pre.error-text").first).to_contain_text("TestTaskFailure")
        await expect(page.get_by_role("button", name="Retry")).to_have_count(0)
        await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)

        # What a viewer could still send: its own session and a valid CSRF token.
        token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
        assert token
        for path, body in (
            (f"/api/v1/jobs/{failed_id}/retry", None),
            ("/api/v1/jobs/bulk/retry", {"job_ids": [failed_id]}),
        ):
            forged = await page.request.post(
                f"{monitor_app.origin}{path}", headers={"x-csrf-token": token}, data=body
            )
            assert forged.status == 403, await forged.text()
            assert "operator" in (await forged.json())["detail"]
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_filters_live_in_the_url_and_a_click_on_a_cell_filters(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        await trigger(tab, monitor_app.operator_key, fail=True)
        await tab.login(monitor_app.viewer_key)
        await tab.open("/monitor?status=failed")
        statuses = page.locator("#rows .status-text")
        await expect(statuses.first).to_have_text("failed")
        assert set(await statuses.all_inner_texts()) == {"failed"}
        await expect(page.locator(".chips")).to_contain_text("status: failed")

        await page.locator("#rows a.value", has_text="trigger_test").first.click()
        await expect(page).to_have_url(re.compile(r"task_name=trigger_test"))
        assert "status=failed" in page.url
        await page.get_by_label("Search").fill('error:"failed on request"')
        await page.get_by_role("button", name="Search").click()
        await expect(page).to_have_url(re.compile(r"q=error%3A%22failed"))
        await expect(statuses.first).to_have_text("failed")

        answer = await tab.open("/monitor?status=lost")
        assert answer.status == 400
        await expect(page.get_by_role("alert")).to_contain_text("'lost' is not a job status")
        tab.errors = [e for e in tab.errors if "400" not in e]  # the refused filter's page
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_overview_shows_queues_and_the_hour(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        job_id = await trigger(tab, monitor_app.operator_key)
        await tab.login(monitor_app.viewer_key)
        await expect(row(tab, job_id).locator(".status-text")).to_have_text(
            "complete", timeout=LIVE
        )
        await page.get_by_role("link", name="Overview").click()
        await expect(page.get_by_role("cell", name=monitor_app.queue_name)).to_be_visible()
        await expect(page.locator("svg.chart rect.bar-complete").first).to_be_visible()
        await expect(page.locator("section.task").first).to_contain_text("p95 run")
        await tab.shot("monitor-overview")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def test_a_viewer_sees_a_masked_argument_on_saqs_job_page_and_the_monitors(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    """The pages as drawn: SAQ's script renders its job page from /saq/api, the monitor's
    job page is rendered on the server; neither may show a viewer the masked value."""
    hidden = "the-viewer-must-not-read-this"
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        job_id = await trigger(tab, monitor_app.operator_key, message=hidden, sleep_seconds=60)
        await tab.login(monitor_app.viewer_key)
        await tab.open(f"/saq/queues/{monitor_app.queue_name}/jobs/{job_id}")
        await expect(page.get_by_role("heading", name=job_id)).to_be_visible()
        await expect(page.locator("figure tbody tr")).to_contain_text("'message': '***'")
        assert hidden not in await page.content()

        await tab.open(f"/monitor/jobs/{job_id}")
        await expect(page.locator("pre.json").first).to_contain_text('"message": "***"')
        assert hidden not in await page.content()
        answer = await page.request.post(
            f"{monitor_app.origin}/api/v1/jobs/{job_id}/cancel",
            headers={"Authorization": f"Bearer {monitor_app.operator_key}"},
        )
        assert answer.status == 202  # frees the worker's slot
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


@pytest.mark.parametrize("address", ["/saq", "/saq/"])
async def test_saq_works_after_logging_in_at_the_monitor(
    browser: Browser, monitor_app: MonitorApp, address: str
) -> None:
    async with monitor_tab(browser, monitor_app.origin) as tab:
        page = tab.page
        job_id = await trigger(tab, monitor_app.operator_key, sleep_seconds=60)
        await tab.login(monitor_app.viewer_key)
        await page.get_by_role("link", name="SAQ queues ↗").click()
        await expect(page.locator("tbody tr", has_text=monitor_app.queue_name)).to_be_visible()
        await tab.open(address)
        assert page.url == f"{monitor_app.origin}/saq/"
        await page.get_by_role("link", name=monitor_app.queue_name).click()
        await expect(page.locator("tbody tr", has_text=job_id)).to_be_visible()
        await page.get_by_role("link", name="History monitor").click()
        await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
        tab.assert_stayed_home()


async def test_jobs_page_at_phone_width(browser: Browser, monitor_app: MonitorApp) -> None:
    async with monitor_tab(browser, monitor_app.origin, width=390, height=844) as tab:
        page = tab.page
        job_id = await trigger(tab, monitor_app.operator_key)
        await tab.login(monitor_app.operator_key)
        await expect(row(tab, job_id).locator(".status-text")).to_have_text(
            "complete", timeout=LIVE
        )
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width} px)"
        await tab.shot("monitor-jobs-phone", full_page=False)
        await page.keyboard.press("Tab")
        await expect(page.locator(":focus")).to_have_text("Skip to the content")

        # The README's jobs page: this module's jobs by now, counted afresh for the filter.
        await page.set_viewport_size({"width": 1280, "height": 900})
        await tab.open("/monitor?task_name=trigger_test")
        await expect(page.locator(".counts")).to_contain_text("failed")
        await expect(row(tab, job_id)).to_be_visible()
        await tab.shot("monitor-jobs")
        tab.assert_monitor_pages_held_csp()
        tab.assert_stayed_home()


async def api_status(tab: MonitorTab, key: str, job_id: str) -> str:
    answer = await tab.page.request.get(
        f"{tab.origin}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
    )
    return str((await answer.json())["status"])


async def held_stream(tab: MonitorTab, pattern: str) -> asyncio.Event:
    """The page's event stream (`pattern`) held back until the returned event is set."""
    release = asyncio.Event()

    async def hold(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await tab.page.route(pattern, hold)
    return release


async def test_a_job_page_whose_stream_starts_after_the_job_ended_shows_the_end(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    """Catches: a page drawn while its job ran, whose event stream opened after the job ended:
    the stream's only message is the job as it is now (`event: job`), which the page did not
    read, and it said `running` for ever."""
    key = monitor_app.operator_key
    async with monitor_tab(browser, monitor_app.origin) as tab:
        await tab.login(key)
        job_id = await trigger(tab, key, sleep_seconds=1.5)
        release = await held_stream(tab, f"**/api/v1/jobs/{job_id}/events*")
        await eventually(lambda: _is(api_status(tab, key, job_id), "running"), what="running")
        await tab.open(f"/monitor/jobs/{job_id}")
        status = tab.page.locator("#job-status .status-text")
        await expect(status).to_have_text("running")
        await eventually(lambda: _is(api_status(tab, key, job_id), "complete"), what="complete")
        release.set()
        await expect(status).to_have_text("complete", timeout=LIVE)
        tab.assert_stayed_home()


async def test_a_jobs_page_whose_stream_starts_after_a_drawn_job_ended_shows_the_end(
    browser: Browser, monitor_app: MonitorApp
) -> None:
    """Catches: the jobs page fetched only the jobs made while its stream was opening, not the
    drawn rows that ended meanwhile (no event would come for them again)."""
    key = monitor_app.operator_key
    async with monitor_tab(browser, monitor_app.origin) as tab:
        await tab.login(key)
        job_id = await trigger(tab, key, sleep_seconds=1.5)
        release = await held_stream(tab, "**/api/v1/events*")
        await eventually(lambda: _is(api_status(tab, key, job_id), "running"), what="running")
        await tab.open("/monitor/jobs")
        status = row(tab, job_id).locator(".status-text")
        await expect(status).to_have_text("running")
        await eventually(lambda: _is(api_status(tab, key, job_id), "complete"), what="complete")
        release.set()
        await expect(status).to_have_text("complete", timeout=LIVE)
        tab.assert_stayed_home()


async def _is(value: Any, wanted: str) -> bool:
    return bool(await value == wanted)

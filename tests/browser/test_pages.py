"""The README's addresses, opened in Chromium: what a person sees at `/saq` and `/schema`.

An HTTP-level test sees a 200 for a page whose script then fails; these look at the page
the script built, with every request kept on the app's origin.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.support.browser import RunningApp, Visit


@pytest.mark.parametrize("address", ["/saq", "/saq/"])
async def test_saq_ui_shows_the_queue(visit: Visit, running_app: RunningApp, address: str) -> None:
    page = visit.page
    await page.goto(f"{running_app.origin}{address}")

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
    await page.goto(f"{running_app.origin}{address}")

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

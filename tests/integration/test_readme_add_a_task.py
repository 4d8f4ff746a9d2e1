"""The README's "Add your own task" section, run as written: its three steps, in order, then
its cron task."""

from __future__ import annotations

import asyncio
import re
import types
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest
from croniter import croniter
from litestar import post
from litestar.di import NamedDependency
from saq.queue import Queue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import BackgroundJob
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.reads.service import BackgroundJobService
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker import settings as worker_settings
from app.worker import tasks as project_tasks
from tests.support import ROOT, StartWorker, eventually


def readme_section_snippets(title: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return [re.sub(r"^ {3}", "", block, flags=re.M) for block in blocks]


def test_the_section_has_the_three_steps_and_a_cron_task() -> None:
    task, registration, handler, after, cron_task, cron = readme_section_snippets(
        "Add your own task"
    )
    assert "@tracked_task(" in task
    assert registration.startswith("TASKS = (")
    assert "jobs_service.enqueue(" in handler
    assert "after=[" in after
    assert "@tracked_task(" in cron_task
    assert cron.startswith("CRON = (CronJob(")


def readme_tasks_module(*snippets: str) -> types.ModuleType:
    """(A copy of) the tasks module, with the README's functions written into it."""
    tasks = types.ModuleType("tasks")
    tasks.__dict__.update(vars(project_tasks))
    tasks.__dict__.update({"asyncio": asyncio, "Any": Any, "tracked_task": tracked_task})
    for snippet in snippets:
        exec(snippet, tasks.__dict__)  # noqa: S102 - the README's own code
    return tasks


async def test_a_task_added_as_the_readme_says_is_tracked_to_complete(
    session: AsyncSession,
    queue: Queue,
    make_enqueuer: Callable[..., Enqueuer],
    start_worker: StartWorker,
    wait_for_row: Callable[..., Awaitable[BackgroundJob]],
) -> None:
    task_snippet, registration_snippet, handler_snippet, *_ = readme_section_snippets(
        "Add your own task"
    )

    # 1. The function, in (a copy of) the tasks module's namespace.
    tasks = readme_tasks_module(task_snippet)
    # 2. The registration line.
    registration: dict[str, Any] = {"tasks": tasks}
    exec(registration_snippet, registration)  # noqa: S102
    registry = TaskRegistry(registration["TASKS"])
    # 3. The handler, called the way Litestar would call it.
    handler_namespace: dict[str, Any] = {
        "post": post,
        "UUID": UUID,
        "NamedDependency": NamedDependency,
        "BackgroundJobService": BackgroundJobService,
        "tasks": tasks,
    }
    exec(handler_snippet, handler_namespace)  # noqa: S102
    welcome = handler_namespace["welcome"]

    await start_worker(registry)
    # The service a handler is given: its enqueue is the API's own outbox path.
    jobs_service = BackgroundJobService(session, enqueuer=make_enqueuer(registry))
    user_id = uuid4()
    answer = await welcome.fn(user_id=user_id, jobs_service=jobs_service)

    row = await wait_for_row(UUID(answer["job_id"]), lambda r: r.status == "complete")
    assert (row.task_name, row.user_id, row.max_attempts) == ("send_welcome_email", user_id, 3)
    assert row.result == {"sent_to": "new@example.com"}
    job = await queue.job(answer["job_id"])
    assert job is not None
    assert (job.timeout, job.retries) == (120, 3)


async def test_the_readme_s_jobs_that_wait_run_after_their_parents(
    session: AsyncSession,
    make_enqueuer: Callable[..., Enqueuer],
    start_worker: StartWorker,
    wait_for_row: Callable[..., Awaitable[BackgroundJob]],
) -> None:
    """The `after=` snippet as written: the report starts only once both parents completed."""
    after_snippet = readme_section_snippets("Add your own task")[3]
    tasks = readme_tasks_module(
        "@tracked_task()\nasync def extract(ctx, *, day):\n    await asyncio.sleep(0.2)\n",
        "@tracked_task()\nasync def load(ctx, *, day):\n    await asyncio.sleep(0.1)\n",
        "@tracked_task()\nasync def report(ctx, *, day):\n    return {'day': day}\n",
    )
    registry = TaskRegistry((tasks.extract, tasks.load, tasks.report))
    await start_worker(registry)
    jobs_service = BackgroundJobService(session, enqueuer=make_enqueuer(registry))
    indented = "".join(f"    {line}\n" for line in after_snippet.splitlines())
    namespace: dict[str, Any] = {"tasks": tasks, "jobs_service": jobs_service}
    exec(f"async def run(day):\n{indented}    return extract, load, report\n", namespace)  # noqa: S102
    extract, load, report = await namespace["run"]("2026-12-07")

    ended = lambda r: r.status == "complete"  # noqa: E731
    done = await wait_for_row(report.job_id, ended)
    parents = [await wait_for_row(job.job_id, ended) for job in (extract, load)]
    assert done.result == {"day": "2026-12-07"}
    assert all(done.started_at >= parent.completed_at for parent in parents)


async def test_a_cron_task_added_as_the_readme_says_has_a_complete_row_per_run(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, start_worker: StartWorker
) -> None:
    *_, cron_task_snippet, cron_snippet = readme_section_snippets("Add your own task")
    tasks = readme_tasks_module(cron_task_snippet)
    # The CRON line, with what `worker/settings.py` has in scope.
    settings_namespace: dict[str, Any] = {"tasks": tasks, "CronJob": worker_settings.CronJob}
    exec(cron_snippet, settings_namespace)  # noqa: S102
    (declared,) = settings_namespace["CRON"]
    assert croniter.is_valid(declared.cron)

    # As written, but each second instead of each night.
    every_second = replace(declared, cron="* * * * * *")
    monkeypatch.setattr(worker_settings, "CRON", (every_second,))
    await start_worker()

    async def a_complete_run() -> BackgroundJob | None:
        async with AsyncSession(engine) as session:
            return await session.scalar(
                select(BackgroundJob).where(
                    BackgroundJob.task_name == "nightly_report",
                    BackgroundJob.status == "complete",
                )
            )

    run = await eventually(a_complete_run, what="a complete run of the README's cron task")
    assert (run.job_key, run.cron, run.max_attempts) == (
        "cron:nightly_report",
        "* * * * * *",
        2,
    )
    assert run.result == {"report": "done"}

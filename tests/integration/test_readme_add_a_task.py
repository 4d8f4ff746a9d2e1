"""The README's "Add your own task" section, run as written: its three snippets, in order."""

from __future__ import annotations

import asyncio
import re
import types
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

from litestar import post
from litestar.di import NamedDependency
from saq.queue import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import BackgroundJob
from app.jobs.registry import TaskRegistry, tracked_task
from app.jobs.services import BackgroundJobService, Enqueuer
from app.worker import tasks as project_tasks
from tests.integration.conftest import StartWorker
from tests.support import ROOT


def readme_section_snippets(title: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return [re.sub(r"^ {3}", "", block, flags=re.M) for block in blocks]


def test_the_section_has_the_three_steps() -> None:
    task, registration, handler = readme_section_snippets("Add your own task")
    assert "@tracked_task(" in task
    assert registration.startswith("TASKS = (")
    assert "jobs_service.enqueue(" in handler


async def test_a_task_added_as_the_readme_says_is_tracked_to_complete(
    session: AsyncSession,
    queue: Queue,
    start_worker: StartWorker,
    wait_for_row: Callable[..., Awaitable[BackgroundJob]],
) -> None:
    task_snippet, registration_snippet, handler_snippet = readme_section_snippets(
        "Add your own task"
    )

    # 1. The function, in (a copy of) the tasks module's namespace.
    tasks = types.ModuleType("tasks")
    tasks.__dict__.update(vars(project_tasks))
    tasks.__dict__.update({"asyncio": asyncio, "Any": Any, "tracked_task": tracked_task})
    exec(task_snippet, tasks.__dict__)  # noqa: S102 - the README's own code
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
    jobs_service = BackgroundJobService(
        session, enqueuer=Enqueuer(queue, registry, default_timeout=60)
    )
    user_id = uuid4()
    answer = await welcome.fn(user_id=user_id, jobs_service=jobs_service)

    row = await wait_for_row(UUID(answer["job_id"]), lambda r: r.status == "complete")
    assert (row.task_name, row.user_id, row.max_attempts) == ("send_welcome_email", user_id, 3)
    assert row.result == {"sent_to": "new@example.com"}
    job = await queue.job(answer["job_id"])
    assert job is not None
    assert (job.timeout, job.retries) == (120, 3)

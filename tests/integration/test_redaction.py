"""Sensitive argument and result values, masked for viewers in every job body the API sends
(one job, the list, a job's event stream, and SAQ's own answers under /saq/api, which its UI
draws from) and shown to operators and admins as stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from litestar.testing import AsyncTestClient
from saq.job import Job, Status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import build_parts, create_app
from app.auth.roles import Role
from app.config import Settings
from app.jobs.http.shared.redaction import MASK
from app.worker.settings import REGISTRY
from tests.support import Servers
from tests.support.access import auth_settings, bearer, make_key

# Exact names and names that hold one (db_password, clientSecret, access_token), any case.
ARGUMENTS = {
    "to": "ann",
    "PASSWORD": "p",
    "db_password": "dbp",
    "auth": {
        "api_key": "k",
        "clientSecret": "cs",
        "scopes": [{"Token": "t", "access_token": "at"}],
    },
}
RESULT = {"sent": True, "secret": "s"}
MASKED_ARGUMENTS = {
    "to": "ann",
    "PASSWORD": MASK,
    "db_password": MASK,
    "auth": {
        "api_key": MASK,
        "clientSecret": MASK,
        "scopes": [{"Token": MASK, "access_token": MASK}],
    },
}


async def stored_job(engine: AsyncEngine, project_id: UUID) -> UUID:
    job_id = uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments,
                    result, errors, attempts, max_attempts, project_id, created_at, updated_at)
                VALUES (gen_random_uuid(), :job_id, 'send_mail', 'q', 'complete',
                    CAST(:arguments AS jsonb), CAST(:result AS jsonb), '[]'::jsonb, 1, 1,
                    :project_id, now(), now())
                """
            ),
            {
                "job_id": job_id,
                "arguments": json.dumps(ARGUMENTS),
                "result": json.dumps(RESULT),
                "project_id": project_id,
            },
        )
    return job_id


@pytest.fixture
async def saq_jobs(settings: Settings) -> AsyncIterator[dict[str, str]]:
    """Two jobs in SAQ's Redis with ARGUMENTS as their kwargs (no worker takes them): one
    queued, one finished with RESULT. Their keys, by state."""
    parts = build_parts(settings, REGISTRY)
    await parts.queue.connect()
    keys = {"queued": str(uuid4()), "complete": str(uuid4())}
    for key in keys.values():
        await parts.queue.enqueue(Job(function="send_mail", key=key, kwargs=ARGUMENTS))
    finished = await parts.queue.job(keys["complete"])
    assert finished is not None
    await parts.queue.finish(finished, Status.COMPLETE, result=RESULT)
    yield keys
    await parts.close()


@pytest.fixture
def settings(database_url: str, servers: Servers) -> Settings:
    return auth_settings(database_url, servers.redis_url)


@pytest.fixture
async def world(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[AsyncTestClient[Any], dict[str, str], UUID]]:
    project = uuid4()
    keys = {
        "viewer": (await make_key(engine, Role.VIEWER))[1],
        "scoped viewer": (await make_key(engine, Role.VIEWER, project))[1],
        "operator": (await make_key(engine, Role.OPERATOR))[1],
        "admin": (await make_key(engine, Role.ADMIN))[1],
    }
    job_id = await stored_job(engine, project)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client, keys, job_id


def event_stream_job(body: str) -> dict[str, Any]:
    """The `event: job` message's data: the stream's first message."""
    lines = body.splitlines()
    assert lines[lines.index("event: job") + 1].startswith("data: ")
    return json.loads(lines[lines.index("event: job") + 1].removeprefix("data: "))


@pytest.mark.parametrize(
    ("who", "masked"),
    [("viewer", True), ("scoped viewer", True), ("operator", False), ("admin", False)],
)
async def test_viewers_see_sensitive_values_masked_everywhere_and_others_as_stored(
    world: tuple[AsyncTestClient[Any], dict[str, str], UUID], who: str, masked: bool
) -> None:
    client, keys, job_id = world
    headers = bearer(keys[who])
    expected = (MASKED_ARGUMENTS, {"sent": True, "secret": MASK}) if masked else (ARGUMENTS, RESULT)

    one = (await client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
    listed = (await client.get("/api/v1/jobs?task_name=send_mail", headers=headers)).json()
    streamed = await client.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
    assert streamed.status_code == 200
    in_stream = event_stream_job(streamed.text)  # the job has ended: the stream ends at once

    for shown in (one, listed["items"][0], in_stream):
        assert (shown["arguments"], shown["result"]) == expected


@pytest.mark.parametrize(
    ("who", "masked"), [("viewer", True), ("operator", False), ("admin", False)]
)
async def test_saq_answers_mask_sensitive_values_for_viewers_as_the_api_does(
    world: tuple[AsyncTestClient[Any], dict[str, str], UUID],
    saq_jobs: dict[str, str],
    settings: Settings,
    who: str,
    masked: bool,
) -> None:
    """What SAQ's UI shows of a queue's jobs and of one job comes from these answers."""
    client, keys, _ = world
    headers = bearer(keys[who])
    arguments = MASKED_ARGUMENTS if masked else ARGUMENTS
    result = {"sent": True, "secret": MASK} if masked else RESULT
    base = f"/saq/api/queues/{settings.queue_name}"

    queue = await client.get(base, headers=headers)
    assert queue.status_code == 200, queue.text
    listed = {job["key"]: job for job in queue.json()["queue"]["jobs"]}
    assert listed[saq_jobs["queued"]]["kwargs"] == arguments

    one = await client.get(f"{base}/jobs/{saq_jobs['complete']}", headers=headers)
    assert one.status_code == 200, one.text
    job = one.json()["job"]
    assert (job["kwargs"], job["result"]) == (repr(arguments), repr(result))  # SAQ's reprs
    for answer in (queue, one):
        assert ("'p'" in answer.text or '"p"' in answer.text) is not masked

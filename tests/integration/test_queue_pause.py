"""Pausing, resuming and draining a queue: the API (audited, idempotent, 4xx with JSON for an
unknown queue or a bad `wait`), the pause enforced where a worker takes jobs (its gate in
Redis), the gate restored from PostgreSQL when Redis lost it, the last read kept while
PostgreSQL is away, a resume that wakes the worker at once, and a drain's count left.

Two worker processes, two API processes and Redis restarted empty: tests/e2e/test_queue_pause.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import Parts, create_app
from app.config import Settings
from app.db.connection import autocommit_sessions
from app.jobs.queue.gate import QueueGate, gate_key
from app.jobs.queue.tracked import TrackedQueue
from tests.support import StartWorker, eventually

RECHECK = 60.0  # a paused worker looks by itself only this rarely: a quick resume is the message
WATCHED = 3.0  # seconds a paused queue is watched for a job taken


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, queue_pause_recheck=RECHECK)


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


async def trigger(client: AsyncTestClient[Any], sleep_seconds: float = 0) -> str:
    answer = await client.post(
        "/api/v1/tasks/trigger-test", json={"message": "m", "sleep_seconds": sleep_seconds}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


async def status_of(client: AsyncTestClient[Any], job_id: str) -> str:
    return str((await client.get(f"/api/v1/jobs/{job_id}")).json()["status"])


async def test_pause_resume_and_drain_are_audited_idempotent_and_refuse_bad_input(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    name = settings.queue_name
    paused = await client.post(f"/api/v1/queues/{name}/pause")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert (body["name"], body["paused"], body["running"]) == (name, True, 0)
    assert body["paused_by"] == "anonymous (auth disabled)"
    again = (await client.post(f"/api/v1/queues/{name}/pause")).json()
    assert (again["paused"], again["paused_at"]) == (True, body["paused_at"]), "first pause stands"
    (listed,) = (await client.get("/api/v1/queues")).json()["queues"]
    assert (listed["paused"], listed["paused_by"], listed["paused_at"]) == (
        True,
        body["paused_by"],
        body["paused_at"],
    )

    resumed = await client.post(f"/api/v1/queues/{name}/resume")
    assert resumed.status_code == 200
    assert (resumed.json()["paused"], resumed.json()["paused_by"]) == (False, None)
    assert (await client.post(f"/api/v1/queues/{name}/resume")).json()["paused"] is False
    (listed,) = (await client.get("/api/v1/queues")).json()["queues"]
    assert (listed["paused"], listed["paused_by"], listed["paused_at"]) == (False, None, None)

    drained = await client.post(f"/api/v1/queues/{name}/drain?wait=0")
    assert drained.status_code == 200
    assert (drained.json()["paused"], drained.json()["running"]) == (True, 0)

    for path in (f"/api/v1/queues/nope/{action}" for action in ("pause", "resume", "drain")):
        unknown = await client.post(path)
        assert unknown.status_code == 404, unknown.text
        assert "nope" in unknown.json()["detail"]
        assert name in unknown.json()["detail"]
    for wait in ("abc", "-1", "31", "nan"):
        bad = await client.post(f"/api/v1/queues/{name}/drain?wait={wait}")
        assert bad.status_code == 400, (wait, bad.text)
        assert bad.headers["content-type"].startswith("application/json")

    audit = (await client.get("/api/v1/audit?limit=20")).json()
    ours = [row for row in audit if (row["filter"] or {}).get("queue") == name]
    assert [(row["action"], row["filter"].get("drain"), row["detail"]) for row in ours] == [
        ("queue_pause", True, None),
        ("queue_resume", None, "was not paused"),
        ("queue_resume", None, "paused by anonymous (auth disabled)"),
        ("queue_pause", False, "already paused"),
        ("queue_pause", False, None),
    ]
    assert {row["outcome"] for row in ours} == {"ok"}
    assert not [row for row in audit if "nope" in str(row["filter"])], "no row for a 404"


async def test_a_paused_queue_s_jobs_wait_and_a_resume_takes_them_at_once(
    client: AsyncTestClient[Any], settings: Settings, start_worker: StartWorker
) -> None:
    """Catches: a take that does not read the gate, a blocking wait that takes a job past it
    (SAQ's BLMOVE), a resume that waits for the worker's next look (RECHECK)."""
    await start_worker()
    done = await trigger(client)
    await eventually(lambda: _is(client, done, "complete"), what="a job before the pause")
    # The worker now waits for a job on the empty queue: the pause comes during that wait.
    assert (await client.post(f"/api/v1/queues/{settings.queue_name}/pause")).status_code == 200
    waiting = [await trigger(client) for _ in range(3)]
    await asyncio.sleep(WATCHED)
    assert [await status_of(client, job) for job in waiting] == ["queued"] * 3
    (listed,) = (await client.get("/api/v1/queues")).json()["queues"]
    assert (listed["queued"], listed["active"], listed["paused"]) == (3, 0, True)

    assert (await client.post(f"/api/v1/queues/{settings.queue_name}/resume")).status_code == 200
    for job in waiting:  # well before RECHECK: the resume's message woke the worker
        await eventually(lambda job=job: _is(client, job, "complete"), within=RECHECK / 3)


async def _is(client: AsyncTestClient[Any], job_id: str, status: str) -> bool:
    return await status_of(client, job_id) == status


async def test_a_gate_redis_lost_is_restored_from_postgresql_before_any_take(
    client: AsyncTestClient[Any], settings: Settings, start_worker: StartWorker, queue: TrackedQueue
) -> None:
    """Catches: an absent gate taken for open (a Redis restarted empty resuming the queue)."""
    name = settings.queue_name
    assert (await client.post(f"/api/v1/queues/{name}/pause")).status_code == 200
    await queue.redis.delete(gate_key(name))  # as a Redis restarted empty would have it
    waiting = await trigger(client)
    await start_worker()
    await eventually(lambda: _gate(queue.redis, name, b"paused"), what="the gate restored")
    await asyncio.sleep(WATCHED)
    assert await status_of(client, waiting) == "queued"

    assert (await client.post(f"/api/v1/queues/{name}/resume")).status_code == 200
    await eventually(lambda: _is(client, waiting, "complete"), within=RECHECK / 3)
    await queue.redis.delete(gate_key(name))  # lost again, now that nothing is paused
    later = await trigger(client)
    await eventually(lambda: _is(client, later, "complete"), what="a job once the gate is open")
    assert await queue.redis.get(gate_key(name)) == b"open"


async def _gate(redis: Redis, name: str, value: bytes) -> bool:
    return await redis.get(gate_key(name)) == value


async def test_a_worker_keeps_its_last_read_while_postgresql_is_away(
    client: AsyncTestClient[Any], settings: Settings, engine: AsyncEngine, queue: TrackedQueue
) -> None:
    """Catches: a gate written `open` (or taken for open) when the record cannot be read."""
    name = settings.queue_name
    assert (await client.post(f"/api/v1/queues/{name}/pause")).status_code == 200
    reachable = autocommit_sessions(lambda: engine)
    away = {"now": False}

    def sessions() -> AsyncSession:
        if away["now"]:
            raise ConnectionRefusedError("PostgreSQL is away")
        return reachable()

    gate = QueueGate(queue.redis, name, sessions, fresh=0)  # each restore reads the record
    assert await gate.restore()
    assert gate.paused is True
    away["now"] = True
    await queue.redis.delete(gate_key(name))
    assert await gate.restore(), "the last read still holds"
    assert await queue.redis.get(gate_key(name)) == b"paused"

    never_read = QueueGate(queue.redis, name, sessions, fresh=0)
    await queue.redis.delete(gate_key(name))
    assert not await never_read.restore(), "nothing known: no gate written"
    assert await queue.redis.get(gate_key(name)) is None


async def test_a_drain_reports_the_jobs_left_running_until_none_is(
    client: AsyncTestClient[Any], settings: Settings, start_worker: StartWorker, parts: Parts
) -> None:
    """Catches: a drain that does not pause, or reports nothing left while a job still runs."""
    name = settings.queue_name
    await start_worker()
    running = await trigger(client, sleep_seconds=3)
    await eventually(lambda: _is(client, running, "running"), what="the job to start")
    first = (await client.post(f"/api/v1/queues/{name}/drain")).json()
    assert (first["paused"], first["running"]) == (True, 1)
    held = await trigger(client)  # accepted while draining, not taken
    # The test client holds this event loop (the worker's) during a call: a drain that waits
    # is tested with real processes (tests/e2e/test_queue_pause.py); here it is called again.

    async def drained() -> bool:
        left = (await client.post(f"/api/v1/queues/{name}/drain")).json()["running"]
        assert left in (0, 1)
        return left == 0

    await eventually(drained, what="the running job to end")
    # Redis's active list and the row end apart by the recorder's flush: the row follows.
    await eventually(lambda: _is(client, running, "complete"), what="the row's end")
    assert await status_of(client, held) == "queued"

"""Progress and Server-Sent Events end to end: a real API process (uvicorn), a real (in-process)
SAQ worker, real PostgreSQL and Redis. The events reach the API through Redis, as they do
from worker processes in production."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.record.progress import report_progress
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.tasks import trigger_test
from tests.support import StartWorker, WaitForRow, app_env
from tests.support.access import api

HEARTBEAT = 0.3  # seconds: small, so a test sees one soon
GATES: dict[str, asyncio.Event] = {}


@tracked_task(timeout=60, attempts=1)
async def stepping(ctx: dict[str, Any], *, name: str) -> dict[str, str]:
    """Waits for the test at each step: `<name>:go`, then reports progress, `<name>:finish`."""
    await GATES[f"{name}:go"].wait()
    await report_progress(ctx, 0.5, "halfway")
    await GATES[f"{name}:finish"].wait()
    return {"name": name}


REGISTRY = TaskRegistry([trigger_test, stepping])


@dataclass
class Message:
    event: str | None = None
    id: str | None = None
    data: Any = None
    comment: str | None = None


@dataclass
class Stream:
    response: httpx.Response
    lines: AsyncIterator[str]
    received: list[Message] = field(default_factory=list)
    ended: bool = False

    async def next(self, within: float = 20.0) -> Message:
        """The next message or comment (the bound only stops a broken test)."""
        message = Message()
        async with asyncio.timeout(within):
            while True:
                try:
                    line = await anext(self.lines)
                except StopAsyncIteration:
                    self.ended = True
                    raise
                if line == "":
                    if message != Message():
                        self.received.append(message)
                        return message
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    message.comment = value
                elif name == "data":
                    message.data = json.loads(value)
                elif name in ("event", "id"):
                    setattr(message, name, value)

    async def until(self, done: Callable[[Message], bool], within: float = 20.0) -> Message:
        while True:
            message = await self.next(within)
            if done(message):
                return message

    async def rest(self, within: float = 20.0) -> list[Message]:
        """Every message until the server ends the stream."""
        start = len(self.received)
        while not self.ended:
            with contextlib.suppress(StopAsyncIteration):
                await self.next(within)
        return self.received[start:]


@pytest.fixture
def live_api(settings: Settings, engine: Any) -> Iterator[int]:
    env = app_env(settings, EVENTS_HEARTBEAT_SECONDS=str(HEARTBEAT))
    with api(env) as (_, port):
        yield port


@pytest.fixture
async def http(live_api: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live_api}", timeout=30) as client:
        yield client


@pytest.fixture
def enqueuer(make_enqueuer: Callable[..., Enqueuer]) -> Enqueuer:
    return make_enqueuer(REGISTRY)


@asynccontextmanager
async def stream(
    client: httpx.AsyncClient, path: str, last_event_id: str | None = None
) -> AsyncIterator[Stream]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response, response.aiter_lines())


def gates(name: str) -> tuple[asyncio.Event, asyncio.Event]:
    GATES[f"{name}:go"], GATES[f"{name}:finish"] = asyncio.Event(), asyncio.Event()
    return GATES[f"{name}:go"], GATES[f"{name}:finish"]


async def test_a_jobs_stream_shows_it_then_its_progress_and_ends_with_its_final_status(
    http: httpx.AsyncClient,
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    go, finish = gates("one")
    await start_worker(REGISTRY)
    job = await enqueuer.enqueue(stepping, {"name": "one"})
    await wait_for_row(job.job_id, lambda row: row.status == "running")

    async with stream(http, f"/api/v1/jobs/{job.job_id}/events") as events:
        first = await events.next()
        assert (first.event, first.data["status"], first.data["progress"]) == (
            "job",
            "running",
            None,
        )
        assert first.id

        go.set()
        progress = await events.until(lambda m: m.event == "progress")
        assert (progress.data["progress"], progress.data["progress_message"]) == (0.5, "halfway")
        assert progress.data["job_id"] == str(job.job_id)
        row = await wait_for_row(job.job_id, lambda row: row.progress == 0.5)
        assert row.progress_message == "halfway"
        shown = (await http.get(f"/api/v1/jobs/{job.job_id}")).json()
        assert (shown["progress"], shown["progress_message"]) == (0.5, "halfway")

        finish.set()
        rest = await events.rest()
    statuses = [m.data["status"] for m in rest if m.event == "status"]
    assert statuses[-1] == "complete"  # and then the server ended the stream
    ids = [m.id for m in events.received if m.id]
    assert len(ids) == len(set(ids))


async def test_a_stream_of_a_job_that_has_ended_sends_it_and_ends(
    http: httpx.AsyncClient, enqueuer: Enqueuer, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker(REGISTRY)
    job = await enqueuer.enqueue(trigger_test, {"message": "m", "sleep_seconds": 0})
    await wait_for_row(job.job_id, lambda row: row.status == "complete")
    async with stream(http, f"/api/v1/jobs/{job.job_id}/events") as events:
        messages = await events.rest()
    assert [(m.event, m.data["status"]) for m in messages] == [("job", "complete")]


async def test_a_reconnect_with_last_event_id_gets_only_the_later_events(
    http: httpx.AsyncClient, enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    await start_worker(REGISTRY)
    path = "/api/v1/events?task_name=trigger_test"
    async with stream(http, path) as events:
        for i in range(3):
            await enqueuer.enqueue(trigger_test, {"message": str(i), "sleep_seconds": 0})
        seen: list[Message] = []
        while sum(m.data["status"] == "complete" for m in seen) < 3:
            seen.append(await events.until(lambda m: m.event is not None))
    assert all(m.data["task_name"] == "trigger_test" for m in seen)

    resume_after = seen[1].id
    assert resume_after is not None
    async with stream(http, path, last_event_id=resume_after) as events:
        again = [await events.until(lambda m: m.event is not None) for _ in seen[2:]]
    assert [(m.id, m.data) for m in again] == [(m.id, m.data) for m in seen[2:]]


async def test_an_idle_stream_sends_heartbeats(http: httpx.AsyncClient) -> None:
    async with stream(http, "/api/v1/events?task_name=nothing_runs_this") as events:
        heartbeat = await events.next(within=HEARTBEAT * 20)
    assert heartbeat == Message(comment="heartbeat")


async def test_a_bad_last_event_id_or_filter_is_a_400(http: httpx.AsyncClient) -> None:
    bad_id = await http.get("/api/v1/events", headers={"Last-Event-ID": "yesterday"})
    assert bad_id.status_code == 400
    assert (await http.get("/api/v1/events?status=finished")).status_code == 400


async def test_a_retry_is_an_event_before_the_new_runs_own(
    http: httpx.AsyncClient, enqueuer: Enqueuer, start_worker: StartWorker
) -> None:
    await start_worker(REGISTRY)
    async with stream(http, "/api/v1/events?task_name=trigger_test") as events:
        job = await enqueuer.enqueue(
            trigger_test, {"message": "m", "sleep_seconds": 0, "fail": True}
        )
        await events.until(lambda m: m.event == "status" and m.data["status"] == "failed")
        assert (await http.post(f"/api/v1/jobs/{job.job_id}/retry")).status_code == 202
        after: list[Message] = []
        while not after or after[-1].data["status"] != "failed":
            after.append(await events.until(lambda m: m.event == "status"))
    assert [(m.data["status"], m.data["attempt"]) for m in after] == [
        ("queued", 1),
        ("running", 2),
        ("failed", 2),
    ]


async def test_the_moves_of_waiting_jobs_are_events_before_their_runs_own(
    http: httpx.AsyncClient, enqueuer: Enqueuer, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    """Moves written in SQL, not by a worker's transition, are events too: a child released
    when its parent completed (`queued`, before its run's `running`), the children a parent's
    abort aborted in turn, the children its retry put back to `waiting`, and an operator's
    cancel of a waiting job and of those waiting for it."""
    go, finish = gates("parent")
    doomed_go, _ = gates("doomed")
    await start_worker(REGISTRY)
    quick = {"message": "m", "sleep_seconds": 0}
    async with stream(http, "/api/v1/events") as events:

        async def moves_of(job_id: Any, until: str) -> list[tuple[str, str | None]]:
            seen: list[tuple[str, str | None]] = []
            while not seen or seen[-1][0] != until:
                message = await events.until(
                    lambda m: m.event == "status" and m.data["job_id"] == str(job_id)
                )
                seen.append((message.data["status"], message.data.get("error")))
            return seen

        parent = await enqueuer.enqueue(stepping, {"name": "parent"})
        child = await enqueuer.enqueue(trigger_test, quick, after=[parent.job_id])
        go.set()
        finish.set()
        assert [status for status, _ in await moves_of(child.job_id, "complete")] == [
            "queued",
            "running",
            "complete",
        ]

        doomed = await enqueuer.enqueue(stepping, {"name": "doomed"})
        first = await enqueuer.enqueue(trigger_test, quick, after=[doomed.job_id])
        second = await enqueuer.enqueue(trigger_test, quick, after=[first.job_id])
        await wait_for_row(doomed.job_id, lambda row: row.status == "running")
        cancelled = await http.post(f"/api/v1/jobs/{doomed.job_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        doomed_go.set()
        reason = f"parent job {doomed.job_id} was aborted"
        assert await moves_of(first.job_id, "aborted") == [("aborted", reason)]
        reason = f"parent job {first.job_id} was aborted"
        assert await moves_of(second.job_id, "aborted") == [("aborted", reason)]

        retried = await http.post(f"/api/v1/jobs/{doomed.job_id}/retry")
        assert retried.status_code == 202, retried.text
        assert [status for status, _ in await moves_of(first.job_id, "waiting")] == ["waiting"]
        assert [status for status, _ in await moves_of(second.job_id, "waiting")] == ["waiting"]

        cancelled = await http.post(f"/api/v1/jobs/{first.job_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert [status for status, _ in await moves_of(first.job_id, "aborted")] == ["aborted"]
        reason = f"parent job {first.job_id} was aborted"
        assert await moves_of(second.job_id, "aborted") == [("aborted", reason)]

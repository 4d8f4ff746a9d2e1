"""The outbox without I/O: the batcher's grouping, and the enqueuer's one INSERT and one Redis
pipeline per group, its idempotency, and its rows kept when Redis is down."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

import pytest

from app.jobs.outbox.batcher import Batcher
from app.jobs.outbox.enqueuer import (
    EnqueuedJob,
    Enqueuer,
    IdempotencyConflictError,
    request_fingerprint,
)
from app.jobs.registry import TaskRegistry, UnknownTaskError, tracked_task
from tests.unit.in_memory import FakeQueue, InMemoryConnection, every_job_took_effect

# -- Batcher ---------------------------------------------------------------------------------


class Flushes:
    """A flush that records its batches; the first one waits until `release` is set."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        if len(self.batches) == 1:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item.upper() for item in items]


async def test_a_lone_item_is_flushed_at_once() -> None:
    flushes = Flushes()
    flushes.release.set()
    assert await Batcher(flushes).submit("a") == "A"
    assert flushes.batches == [["a"]]


async def test_items_that_arrive_during_a_flush_go_together_in_the_next() -> None:
    flushes = Flushes()
    batcher = Batcher(flushes)
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)  # the first flush is now running, and waits
    others = [asyncio.create_task(batcher.submit(item)) for item in "bcd"]
    await asyncio.sleep(0)
    flushes.release.set()
    assert await asyncio.gather(first, *others) == ["A", "B", "C", "D"]
    assert flushes.batches == [["a"], ["b", "c", "d"]]


async def test_a_flush_takes_at_most_max_batch_items() -> None:
    flushes = Flushes()
    batcher = Batcher(flushes, max_batch=2)
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.submit(item)) for item in "bcde"]
    await asyncio.sleep(0)
    flushes.release.set()
    await asyncio.gather(first, *others)
    assert flushes.batches == [["a"], ["b", "c"], ["d", "e"]]


async def test_every_caller_of_a_failed_flush_gets_its_error_and_the_next_flush_runs() -> None:
    flushes = Flushes(fail=OSError("database down"))
    batcher = Batcher(flushes)
    waiting = [asyncio.create_task(batcher.submit(item)) for item in "ab"]
    await asyncio.sleep(0)
    flushes.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    flushes.fail = None
    assert await batcher.submit("c") == "C"


# -- Enqueuer --------------------------------------------------------------------------------


@tracked_task(timeout=45, attempts=3, retry_delay=2, max_retry_delay=30)
async def send_report(ctx: dict[str, Any], **arguments: Any) -> None:
    return None


def enqueuer_on(connection: InMemoryConnection, queue: FakeQueue) -> Enqueuer:
    # The FakeQueue stands in for the TrackedQueue: the outbox only calls `enqueue_many`.
    return Enqueuer(queue, TaskRegistry([send_report]), 60, connection)  # type: ignore[arg-type]


async def test_the_row_is_committed_before_its_job_goes_to_the_queue() -> None:
    events: list[str] = []

    def answer(statement: str, parameters: dict[str, Any]) -> Any:
        events.append(f"insert {len(parameters['job_ids'])}")
        return every_job_took_effect(statement, parameters)

    connection, queue = InMemoryConnection(answer=answer), FakeQueue(events=events)
    job = await enqueuer_on(connection, queue).enqueue(send_report, {"to": "ops"})

    assert events == ["insert 1", "enqueue 1"]
    (insert,) = connection.executed
    assert "INSERT INTO background_jobs" in insert.statement
    assert insert.parameters["job_ids"] == [job.job_id]
    assert insert.parameters["max_attempts"] == [3]
    (saq_job,) = queue.jobs
    assert (saq_job.key, saq_job.function, saq_job.kwargs) == (
        str(job.job_id),
        "send_report",
        {"to": "ops"},
    )
    assert (saq_job.timeout, saq_job.retries, saq_job.retry_delay, saq_job.retry_backoff) == (
        45,
        3,
        2,
        30,
    )


async def test_concurrent_enqueues_share_one_insert_and_one_pipeline() -> None:
    connection, queue = InMemoryConnection(), FakeQueue()
    enqueuer = enqueuer_on(connection, queue)
    jobs = await asyncio.gather(*(enqueuer.enqueue(send_report, {"n": n}) for n in range(5)))
    assert len(connection.executed) == 1
    assert connection.executed[0].parameters["job_ids"] == [job.job_id for job in jobs]
    assert queue.pipelines == [5]


async def test_arguments_named_like_saq_job_fields_stay_task_arguments() -> None:
    queue = FakeQueue()
    arguments = {"key": "k-1", "timeout": 1, "retries": 9}
    job = await enqueuer_on(InMemoryConnection(), queue).enqueue(send_report, arguments)
    (saq_job,) = queue.jobs
    assert saq_job.kwargs == arguments
    assert (saq_job.key, saq_job.timeout, saq_job.retries) == (str(job.job_id), 45, 3)


async def test_an_unregistered_task_is_refused_before_anything_is_written() -> None:
    connection = InMemoryConnection()
    with pytest.raises(UnknownTaskError):
        await enqueuer_on(connection, FakeQueue()).enqueue("not_a_task", {})
    assert connection.executed == []


async def test_when_redis_is_down_the_row_is_kept_and_the_caller_answered() -> None:
    connection, queue = InMemoryConnection(), FakeQueue(down=ConnectionError("redis down"))
    job = await enqueuer_on(connection, queue).enqueue(send_report, {})
    assert connection.executed[0].parameters["job_ids"] == [job.job_id]
    assert queue.jobs == []


FirstRow = namedtuple("FirstRow", list(EnqueuedJob.__dataclass_fields__))


def taken_key(first: EnqueuedJob) -> Any:
    """PostgreSQL's answers when the key was used: nothing inserted, then the first row."""

    def answer(statement: str, parameters: dict[str, Any]) -> Any:
        if statement.startswith("SELECT"):
            return [FirstRow(*(getattr(first, name) for name in FirstRow._fields))]
        return []

    return answer


async def test_a_repeated_idempotency_key_returns_the_first_requests_row() -> None:
    queue = FakeQueue()
    first = await enqueuer_on(InMemoryConnection(), queue).enqueue(
        send_report, {"to": "ops"}, idempotency_key="order-42"
    )
    connection = InMemoryConnection(answer=taken_key(first))
    again = await enqueuer_on(connection, queue).enqueue(
        send_report, {"to": "ops"}, idempotency_key="order-42"
    )
    assert again == first
    assert connection.executed[1].parameters == {"key": "order-42"}
    assert len(queue.jobs) == 1  # the repeat enqueued nothing


async def test_a_key_reused_with_another_request_is_a_conflict() -> None:
    first = await enqueuer_on(InMemoryConnection(), FakeQueue()).enqueue(
        send_report, {"to": "ops"}, idempotency_key="order-43"
    )
    connection = InMemoryConnection(answer=taken_key(first))
    with pytest.raises(IdempotencyConflictError):
        await enqueuer_on(connection, FakeQueue()).enqueue(
            send_report, {"to": "someone else"}, idempotency_key="order-43"
        )


def test_the_fingerprint_ignores_argument_order_but_not_values() -> None:
    same = request_fingerprint("t", {"a": 1, "b": 2}, None)
    assert same == request_fingerprint("t", {"b": 2, "a": 1}, None)
    assert same != request_fingerprint("t", {"a": 1, "b": 3}, None)

"""Jobs that wait for other jobs (`after=`): recorded `waiting`, released when every parent
completed, aborted (naming the parent) when one did not, back to waiting when an operator
retries that parent; the reconciler settles what a killed process left (docs/reliability.md,
promise 14)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from uuid import UUID, uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import Parts
from app.db.connection import HeldConnection, autocommit_sessions
from app.jobs.control.actions import JobActions
from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.outbox.after import DependencyError
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reconciler import Reconciler
from app.jobs.record.dependencies import settle_children
from app.jobs.record.statements import write_transitions
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.tasks import trigger_test
from tests.support import StartWorker, WaitForRow
from tests.support.rows import counted_and_final, read_rows

TRIGGER = "/api/v1/tasks/trigger-test"


@tracked_task(timeout=60, attempts=1)
async def fails_first_run(ctx: dict[str, Any]) -> str:
    """Fails on its first attempt; an operator's retry (a second attempt) completes."""
    if ctx["job"].attempts < 2:
        raise RuntimeError("first run fails")
    return "second run"


REGISTRY = TaskRegistry([trigger_test, fails_first_run])


async def _status(engine: AsyncEngine, job_id: UUID) -> str:
    return (await read_rows(engine, [job_id]))[str(job_id)].status


async def test_a_chain_runs_in_order_each_job_after_its_parent_completed(
    jobs: BackgroundJobService, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    first = await jobs.enqueue(trigger_test, {"message": "1", "sleep_seconds": 0.2})
    second = await jobs.enqueue(
        trigger_test, {"message": "2", "sleep_seconds": 0}, after=[first.job_id]
    )
    third = await jobs.enqueue(
        trigger_test, {"message": "3", "sleep_seconds": 0}, after=[second.job_id]
    )
    assert (first.status, second.status, third.status) == ("queued", "waiting", "waiting")
    await start_worker()
    rows = [
        await wait_for_row(j.job_id, lambda r: r.status == "complete")
        for j in (first, second, third)
    ]
    for parent, child in itertools.pairwise(rows):
        assert parent.completed_at is not None
        assert child.started_at is not None
        assert child.started_at >= parent.completed_at  # never before its parent completed


async def test_fan_in_waits_for_every_parent_and_fan_out_releases_every_child(
    jobs: BackgroundJobService,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    engine: AsyncEngine,
) -> None:
    quick = await jobs.enqueue(trigger_test, {"message": "quick", "sleep_seconds": 0})
    slow = await jobs.enqueue(trigger_test, {"message": "slow", "sleep_seconds": 1.5})
    both = await jobs.enqueue(
        trigger_test, {"message": "both", "sleep_seconds": 0}, after=[quick.job_id, slow.job_id]
    )
    fan_out = [
        await jobs.enqueue(
            trigger_test, {"message": f"c{i}", "sleep_seconds": 0}, after=[quick.job_id]
        )
        for i in range(3)
    ]
    await start_worker()
    await wait_for_row(quick.job_id, lambda r: r.status == "complete")
    for child in fan_out:
        await wait_for_row(child.job_id, lambda r: r.status == "complete")
    assert await _status(engine, both.job_id) == "waiting"  # `slow` still runs
    done = await wait_for_row(both.job_id, lambda r: r.status == "complete")
    slow_row = await wait_for_row(slow.job_id, lambda r: r.status == "complete")
    assert done.started_at is not None
    assert slow_row.completed_at is not None
    assert done.started_at >= slow_row.completed_at


async def test_a_failed_parent_aborts_its_descendants_and_its_retry_makes_them_wait_again(
    parts: Parts,
    engine: AsyncEngine,
    make_enqueuer: Any,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    enqueuer = make_enqueuer(REGISTRY)
    sessions = autocommit_sessions(lambda: engine)
    jobs = BackgroundJobService(sessions(), enqueuer=enqueuer)
    parent = await jobs.enqueue(fails_first_run)
    child = await jobs.enqueue(
        trigger_test, {"message": "c", "sleep_seconds": 0}, after=[parent.job_id]
    )
    grandchild = await jobs.enqueue(
        trigger_test, {"message": "g", "sleep_seconds": 0}, after=[child.job_id]
    )
    await start_worker(REGISTRY)
    await wait_for_row(parent.job_id, lambda r: r.status == "failed")
    aborted = await wait_for_row(child.job_id, lambda r: r.status == "aborted")
    assert aborted.error == f"parent job {parent.job_id} failed"
    assert aborted.started_at is None  # it never ran
    later = await wait_for_row(grandchild.job_id, lambda r: r.status == "aborted")
    assert later.error == f"parent job {child.job_id} was aborted"

    retried = await JobActions(sessions, enqueuer).retry([parent.job_id], actor="test")
    assert retried.job_ids == [parent.job_id]
    for job_id in (child.job_id, grandchild.job_id):
        await wait_for_row(
            job_id, lambda r: r.status in ("waiting", "queued", "running", "complete")
        )
    for job_id in (parent.job_id, child.job_id, grandchild.job_id):
        await wait_for_row(job_id, lambda r: r.status == "complete")
    counted, final = await counted_and_final(engine)  # the aborts counted, then taken back
    assert counted == final == {"complete": 3, "failed": 0, "aborted": 0}


async def test_a_job_after_parents_that_already_ended_is_queued_or_aborted_at_once(
    jobs: BackgroundJobService,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    engine: AsyncEngine,
) -> None:
    done = await jobs.enqueue(trigger_test, {"message": "d", "sleep_seconds": 0})
    failed = await jobs.enqueue(trigger_test, {"message": "f", "sleep_seconds": 0, "fail": True})
    await start_worker()
    await wait_for_row(done.job_id, lambda r: r.status == "complete")
    await wait_for_row(failed.job_id, lambda r: r.status == "failed")
    ready = await jobs.enqueue(
        trigger_test, {"message": "r", "sleep_seconds": 0}, after=[done.job_id]
    )
    assert ready.status == "queued"
    await wait_for_row(ready.job_id, lambda r: r.status == "complete")
    doomed = await jobs.enqueue(trigger_test, {"message": "x"}, after=[done.job_id, failed.job_id])
    assert doomed.status == "aborted"
    row = await wait_for_row(doomed.job_id, lambda r: r.status == "aborted")
    assert row.error == f"parent job {failed.job_id} failed"
    counted, final = await counted_and_final(engine)  # the child aborted at its insert too
    assert counted == final == {"complete": 2, "failed": 1, "aborted": 1}


async def test_a_repeated_idempotency_key_with_after_makes_one_waiting_row(
    jobs: BackgroundJobService, engine: AsyncEngine
) -> None:
    """The key is claimed in `job_idempotency_keys` by the child's own statement (the
    partitioned table cannot keep it unique): repeats return the first child."""
    parent = await jobs.enqueue(trigger_test, {"message": "p"})
    repeats = await asyncio.gather(
        *(
            jobs.enqueue(trigger_test, {"message": "c"}, idempotency_key="k", after=[parent.job_id])
            for _ in range(3)
        )
    )
    assert {(r.job_id, r.status) for r in repeats} == {(repeats[0].job_id, "waiting")}
    async with engine.connect() as connection:
        rows = await connection.scalar(
            text("SELECT count(*) FROM background_jobs WHERE idempotency_key = 'k'")
        )
    assert rows == 1


async def test_an_unknown_parent_or_one_of_another_project_records_nothing(
    jobs: BackgroundJobService, engine: AsyncEngine
) -> None:
    project = uuid4()
    parent = await jobs.enqueue(trigger_test, {"message": "p"}, project_id=project)
    for after, project_id in (
        ([uuid4()], project),
        ([parent.job_id], uuid4()),
        ([parent.job_id], None),
    ):
        with pytest.raises(DependencyError):
            await jobs.enqueue(trigger_test, {"message": "c"}, project_id=project_id, after=after)
    async with engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM background_jobs"))
        links = await connection.scalar(text("SELECT count(*) FROM job_dependencies"))
    assert (count, links) == (1, 0)


async def test_the_trigger_takes_after_and_answers_bad_parents_with_a_400(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    parent = (await client.post(TRIGGER, json={"message": "p", "sleep_seconds": 0})).json()
    assert "status" not in parent  # `queued`: the body is the seed's, as before
    child = await client.post(TRIGGER, json={"message": "c", "after": [parent["job_id"]]})
    assert child.status_code == 202, child.text
    assert child.json().get("status", "queued") in ("waiting", "queued")
    for body in (
        {"message": "c", "after": [str(uuid4())]},  # unknown (a job's own id would be too)
        {"message": "c", "after": [parent["job_id"]], "project_id": str(uuid4())},
        {"message": "c", "after": ["not-a-uuid"]},
        {"message": "c", "after": [str(uuid4()) for _ in range(101)]},
    ):
        refused = await client.post(TRIGGER, json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert "after" in refused.text
    listed = (await client.get("/api/v1/jobs", params={"status": "waiting"})).json()
    assert all(item["status"] == "waiting" for item in listed["items"])


async def test_cancelling_a_waiting_job_aborts_it_and_its_children(
    jobs: BackgroundJobService, engine: AsyncEngine
) -> None:
    parent = await jobs.enqueue(trigger_test, {"message": "p", "sleep_seconds": 0})
    child = await jobs.enqueue(trigger_test, {"message": "c"}, after=[parent.job_id])
    grandchild = await jobs.enqueue(trigger_test, {"message": "g"}, after=[child.job_id])
    row = await jobs.get_by_job_id(child.job_id)
    assert row is not None
    await jobs.cancel(row, reason="cancelled by test")
    rows = await read_rows(engine, [child.job_id, grandchild.job_id])
    assert rows[str(child.job_id)].status == "aborted"
    assert rows[str(child.job_id)].error == "cancelled by test"
    assert rows[str(grandchild.job_id)].error == f"parent job {child.job_id} was aborted"
    counted, final = await counted_and_final(engine)
    assert counted["aborted"] == final["aborted"] == 2


async def test_two_parents_completing_at_once_in_two_processes_release_their_children(
    jobs: BackgroundJobService, engine: AsyncEngine
) -> None:
    """`a`'s end and release are written in a transaction held open while `b`'s run on another
    connection (two recorders at the same moment): `b`'s release waits for the children's rows,
    then must count from what `a`'s wrote. A check of the other parent's status instead would
    read `a` unfinished (its statement's snapshot) and leave every child waiting."""
    a = await jobs.enqueue(trigger_test, {"message": "a"})
    b = await jobs.enqueue(trigger_test, {"message": "b"})
    children = [
        await jobs.enqueue(trigger_test, {"message": f"c{i}"}, after=[a.job_id, b.job_id])
        for i in range(20)
    ]

    def ended(parent: UUID) -> list[Transition]:
        return [Transition(parent, "trigger_test", JobStatus.COMPLETE, 1)]

    held = await engine.connect()
    transaction = await held.begin()

    async def in_transaction(statement: Any, parameters: Any) -> Any:
        return (await held.execute(statement, parameters)).all()

    written = await write_transitions(in_transaction, ended(a.job_id))
    await settle_children(in_transaction, written.ended_parents)  # `a` counted, not committed
    other = HeldConnection(lambda: engine)

    async def b_ends() -> None:
        written = await write_transitions(other.execute, ended(b.job_id))
        await settle_children(other.execute, written.ended_parents)

    b_task = asyncio.create_task(b_ends())
    await asyncio.sleep(1.0)  # `b`'s release has started and waits for the children's rows
    assert not b_task.done()
    await transaction.commit()
    await b_task
    await held.close()
    await other.close()
    rows = await read_rows(engine, [c.job_id for c in children])
    assert {row.status for row in rows.values()} == {"queued"}


async def test_the_reconciler_settles_waiting_rows_a_killed_process_left(
    jobs: BackgroundJobService, engine: AsyncEngine, queue: TrackedQueue, parts: Parts
) -> None:
    done = await jobs.enqueue(trigger_test, {"message": "d"})
    failed = await jobs.enqueue(trigger_test, {"message": "f"})
    ready = await jobs.enqueue(trigger_test, {"message": "r"}, after=[done.job_id])
    doomed = await jobs.enqueue(trigger_test, {"message": "x"}, after=[failed.job_id])
    # The parents' ends were written, and the process died before it settled the children.
    async with engine.begin() as connection:
        for job_id, status in ((done.job_id, "complete"), (failed.job_id, "failed")):
            await connection.execute(
                text("UPDATE background_jobs SET status = :s WHERE job_id = :j"),
                {"s": status, "j": job_id},
            )
    assert await queue.job(str(ready.job_id)) is None
    reconciler = Reconciler(
        queue,
        parts.enqueuer,
        autocommit_sessions(lambda: engine),
        interval=1,
        grace=0,
        worker_lost_after=0,
    )
    report = await reconciler.run_once(force=True)
    assert report.released == 1
    rows = await read_rows(engine, [ready.job_id, doomed.job_id])
    assert rows[str(ready.job_id)].status == "queued"
    assert await queue.job(str(ready.job_id)) is not None  # and on the queue
    assert rows[str(doomed.job_id)].status == "aborted"
    assert rows[str(doomed.job_id)].error == f"parent job {failed.job_id} failed"

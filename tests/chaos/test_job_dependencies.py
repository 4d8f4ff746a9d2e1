"""Jobs that wait for other jobs under a fault: PostgreSQL stops while their parents end
(docs/reliability.md, promise 14)."""

from __future__ import annotations

import asyncio

from app.jobs.reads.service import BackgroundJobService
from tests.support.app import chaos_sleep
from tests.support.cluster import MARGIN, Cluster
from tests.support.rows import eventually


async def test_postgres_down_while_parents_end_releases_their_children_once_it_is_back(
    cluster: Cluster,
) -> None:
    """Five parents end while PostgreSQL is stopped; the reconciler is pushed out of the
    window, so only the worker that ran each parent can release its child: its end waits in
    the recorder, is written once PostgreSQL is back, and the child follows.

    Catches: a release lost with the failed write (a child left waiting), a child run before
    its parent's end reached the row, a child run twice."""
    cluster.start_worker(RECONCILE_INTERVAL="100000")
    parts = await cluster.parts()
    service = BackgroundJobService(parts.sessions(), enqueuer=parts.enqueuer)
    parents = [await service.enqueue(chaos_sleep, {"seconds": 1.5}) for _ in range(5)]
    children = [
        await service.enqueue(chaos_sleep, {"seconds": 0}, after=[parent.job_id])
        for parent in parents
    ]
    assert {child.status for child in children} == {"waiting"}
    parent_ids = [str(parent.job_id) for parent in parents]
    await cluster.wait_until_status(parent_ids, {"running"}, len(parents))
    cluster.postgres.stop(mode="fast")
    await asyncio.sleep(3)  # the parents end meanwhile; their ends wait in the recorder
    cluster.postgres.start()

    child_ids = [str(child.job_id) for child in children]

    async def children_complete() -> bool:
        rows = await cluster.rows(child_ids)
        return all(row.status == "complete" for row in rows.values())

    await eventually(children_complete, within=5 + MARGIN, what="the children complete")
    rows = await cluster.rows(parent_ids + child_ids)
    for parent, child in zip(parent_ids, child_ids, strict=True):
        assert rows[parent].status == "complete"
        started, ended = rows[child].started_at, rows[parent].completed_at
        assert started is not None
        assert ended is not None
        assert started >= ended
    assert not cluster.events("reconciled background_jobs with redis"), "no repair ran"
    runs = await cluster.executions()
    assert {runs[job_id] for job_id in parent_ids + child_ids} == {1}


async def test_redis_restarted_empty_with_parents_queued_and_children_waiting(
    cluster: Cluster,
) -> None:
    """Redis restarts without persistence before any worker ran: the parents' jobs are gone,
    the children were never there. The reconciler enqueues the parents again from their rows
    (promise 3) and leaves the waiting children alone; each child follows its parent.

    Catches: a waiting child enqueued by the reconciler as a queued row missing from Redis
    (it would run before its parent), a child left waiting, a job run twice."""
    parts = await cluster.parts()
    service = BackgroundJobService(parts.sessions(), enqueuer=parts.enqueuer)
    parents = [await service.enqueue(chaos_sleep, {"seconds": 0.2}) for _ in range(3)]
    children = [
        await service.enqueue(chaos_sleep, {"seconds": 0}, after=[parent.job_id])
        for parent in parents
    ]
    cluster.redis.stop()
    cluster.redis.start()  # no AOF, no snapshot: every queued job is gone
    cluster.start_worker()
    parent_ids = [str(parent.job_id) for parent in parents]
    child_ids = [str(child.job_id) for child in children]

    async def children_complete() -> bool:
        rows = await cluster.rows(child_ids)
        return all(row.status == "complete" for row in rows.values())

    within = cluster.settings.reconcile_grace + cluster.settings.reconcile_interval + MARGIN
    await eventually(children_complete, within=within, what="the children complete")
    rows = await cluster.rows(parent_ids + child_ids)
    for parent, child in zip(parent_ids, child_ids, strict=True):
        started, ended = rows[child].started_at, rows[parent].completed_at
        assert started is not None
        assert ended is not None
        assert started >= ended
    runs = await cluster.executions()
    assert {runs[job_id] for job_id in parent_ids + child_ids} == {1}

"""Redis and PostgreSQL lost, flushed or restarted while jobs wait, run or arrive: no job is
lost or left stuck, each is recovered by the mechanism docs/reliability.md names, within
its bound, and every process recovers by itself.

Every scenario is one line of the table the chaos suite prints, and asserts that line.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text

from tests.support.app import chaos_sleep
from tests.support.cluster import MARGIN, Cluster
from tests.support.rows import eventually

TRIGGER = "/api/v1/tasks/trigger-test"
REQUEUED = "job missing from redis, enqueued again"
OUTAGE_SECONDS = 8.0


def dequeue_attempts_within(outage: float, first: float = 0.1, cap: float = 5.0) -> int:
    """How many dequeues one worker loop tries during `outage` s when each failure doubles its
    wait (from `first` up to `cap`): the count the back-off promises, against SAQ's spin."""
    attempts, waited, wait = 1, 0.0, first
    while waited < outage:
        waited, attempts, wait = waited + wait, attempts + 1, min(wait * 2, cap)
    return attempts


def enqueue_again_bound(cluster: Cluster) -> float:
    """A job missing from Redis is enqueued again RECONCILE_GRACE after its row last changed,
    plus one RECONCILE_INTERVAL (docs/reliability.md)."""
    return cluster.settings.reconcile_grace + cluster.settings.reconcile_interval + MARGIN


async def test_redis_flushall_with_jobs_queued(cluster: Cluster) -> None:
    """Catches: the reconciler's enqueue-again of a queued row whose job is gone removed."""
    job_ids = await cluster.submit(30, chaos_sleep, seconds=0.05)
    await (await cluster.queue()).redis.flushall()
    cluster.start_worker()

    settled = await cluster.settle(
        "redis FLUSHALL, jobs queued", job_ids,
        recovered_by="reconciler: enqueued again from the row",
        within=enqueue_again_bound(cluster),
    )  # fmt: skip
    settled.expect(completed=30)
    assert {e["job_id"] for e in cluster.events(REQUEUED)} == set(job_ids), settled.explain()
    settled.saw("30 x enqueued again")
    assert set((await cluster.executions()).values()) == {1}


async def test_redis_restart_without_persistence_with_jobs_queued(cluster: Cluster) -> None:
    """Catches: the reconciler's enqueue-again removed (a restart without persistence empties
    the queue as FLUSHALL does, and every client must reconnect first)."""
    job_ids = await cluster.submit(30, chaos_sleep, seconds=0.05)
    cluster.redis.stop()
    cluster.redis.start()  # no AOF, no snapshot: every queued job is gone
    cluster.start_worker()

    settled = await cluster.settle(
        "redis restart (no persistence), jobs queued", job_ids,
        recovered_by="reconciler: enqueued again from the row",
        within=enqueue_again_bound(cluster),
    )  # fmt: skip
    settled.expect(completed=30)
    assert {e["job_id"] for e in cluster.events(REQUEUED)} == set(job_ids), settled.explain()
    settled.saw("30 x enqueued again")
    assert set((await cluster.executions()).values()) == {1}


async def test_redis_down_while_requests_keep_arriving(cluster: Cluster) -> None:
    """Redis stops for 8 s while requests arrive; one worker loop (WORKER_CONCURRENCY=1).

    Catches: the dequeue back-off removed (the worker would try thousands of times instead of
    a handful: SAQ #286), the rows accepted during the outage not enqueued again by the
    reconciler, and an API that does not reconnect by itself (its job after the outage would
    reach Redis only through the reconciler, or /ready would stay red).
    """
    cluster.start_api()
    worker = cluster.start_worker(WORKER_CONCURRENCY="1")
    cluster.redis.stop()
    down_at = time.monotonic()
    job_ids = []
    for n in range(20):
        status, body = cluster.http("POST", TRIGGER, {"message": f"during outage {n}"})
        assert status == 202, body  # the row is the outbox: accepted while Redis is down
        job_ids.append(body["job_id"])
    await asyncio.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
    cluster.redis.start()
    outage = time.monotonic() - down_at

    async def ready() -> bool:
        return cluster.http("GET", "/ready")[0] == 200

    await eventually(ready, within=MARGIN, what="/ready green after the outage")
    status, body = cluster.http("POST", TRIGGER, {"message": "after the outage"})
    assert status == 202, body
    after = body["job_id"]

    settled = await cluster.settle(
        "redis down while requests arrive", [*job_ids, after],
        recovered_by="reconciler: enqueued again; API reconnected",
        # The worker may sit out its longest back-off (5 s) before it dequeues again.
        within=5 + enqueue_again_bound(cluster) + 20 * 0.1,
    )  # fmt: skip
    settled.expect(completed=21)
    requeued = {e["job_id"] for e in cluster.events(REQUEUED)}
    assert requeued == set(job_ids), "only the outage's rows needed the reconciler"
    assert after not in requeued, "the API put its new job on Redis itself"
    assert worker.process.poll() is None, "the worker recovered by itself"
    attempts = len([e for e in cluster.events("redis unavailable")])
    bound = dequeue_attempts_within(outage) + 2
    assert 1 <= attempts <= bound, f"{attempts} dequeue attempts in {outage:.1f} s (≤ {bound})"
    settled.saw(
        f"20 x enqueued again, the new job not; {attempts} dequeue attempts in the "
        f"{outage:.0f} s outage (≤ {bound})"
    )
    assert set((await cluster.executions()).values()) == {1}


async def test_postgres_down_while_jobs_are_processed(cluster: Cluster) -> None:
    """PostgreSQL stops for 3 s while 30 jobs run. The reconciler's repair is pushed out of the
    window (RECONCILE_INTERVAL huge), so only the recorder's retry can make the rows true.

    Catches: a recorder that drops a batch it could not write (those rows would stay
    `running` or `queued`), and a trigger that answers anything but 503 with PostgreSQL down.
    """
    no_repair = {"RECONCILE_INTERVAL": "100000"}
    cluster.start_api()
    cluster.start_worker(**no_repair)
    job_ids = await cluster.submit(30, chaos_sleep, seconds=0.5)
    await cluster.wait_until_status(job_ids, {"running", "complete"}, 5)
    cluster.postgres.stop(mode="fast")
    status, body = cluster.http("POST", TRIGGER, {"message": "database is down"})
    assert status == 503, body
    await asyncio.sleep(3)  # jobs keep running; their lifecycle writes wait
    cluster.postgres.start()

    settled = await cluster.settle(
        "postgres down while jobs run", job_ids,
        recovered_by="recorder: kept and retried its writes",
        within=5 + 30 * 0.5 / cluster.settings.worker_concurrency + MARGIN,  # longest back-off
    )  # fmt: skip
    settled.expect(completed=30)
    assert cluster.events("could not write job lifecycle, will retry"), settled.explain()
    assert not cluster.events("reconciled background_jobs with redis"), "no repair ran"
    retries = len(cluster.events("could not write job lifecycle, will retry"))
    settled.saw(f"{retries} failed writes retried, no repair")
    assert set((await cluster.executions()).values()) == {1}
    # The 503 wrote nothing and enqueued nothing.
    redis = (await cluster.queue()).redis
    assert len(await redis.keys(f"saq:job:{cluster.settings.queue_name}:*")) == 30
    async with cluster.engine.connect() as connection:
        total = await connection.scalar(text("SELECT count(*) FROM background_jobs"))
    assert total == 30

"""A mixed fleet: a plain SAQ worker (SAQ's own `Worker` over a plain `RedisQueue`) and a plain
SAQ producer on the tracked queue, beside a tracked worker and the API, as during a rolling
upgrade or with another service on the queue. No job is lost, run twice or left `aborting`,
and the rows end true.
"""

from __future__ import annotations

from saq.job import Job, Status
from saq.queue.redis import RedisQueue

from tests.support.app import chaos_sleep
from tests.support.cluster import MARGIN, Cluster
from tests.support.faults import recovery_bound, start_plain_worker
from tests.support.rows import eventually

PLAIN = "plain-worker"
REPAIRED = "reconciled background_jobs with redis"


async def test_a_plain_saq_worker_and_producer_beside_the_tracked_fleet(cluster: Cluster) -> None:
    """A plain producer's four jobs run on the tracked worker; then eight outbox jobs run on
    both workers, one of each worker's is cancelled through the API. On 424c7d6 the plain
    producer's jobs never had a row.

    Catches: a tracked worker that does not adopt a job with no row (the producer's jobs
    would have none), the reconciler's repair from Redis removed (the rows of the plain
    worker's jobs, which reports nothing, would stay `queued`), and an abort a plain worker
    does not carry out.
    """
    cluster.start_api()
    cluster.start_worker(WORKER_CONCURRENCY="2")
    queue = await cluster.queue()
    producer = RedisQueue(queue.redis, name=queue.name)  # SAQ's own, not TrackedQueue
    produced = []
    for _ in range(4):
        job = await producer.enqueue(Job(function=chaos_sleep.__qualname__, kwargs={"seconds": 0}))
        assert job is not None
        produced.append(job.key)  # SAQ's key, a UUID: the row's id once adopted

    async def produced_ran() -> bool:
        jobs = await queue.jobs(produced)
        return all(job is not None and job.status == Status.COMPLETE for job in jobs)

    await eventually(produced_ran, within=MARGIN, what="the plain producer's jobs run")
    start_plain_worker(cluster, PLAIN, WORKER_CONCURRENCY="2")
    job_ids = await cluster.submit(8, chaos_sleep, seconds=3)

    async def two_active_on_each() -> dict[str, str] | None:
        jobs = await queue.jobs(job_ids)
        where = {job.key: str(job.worker_id) for job in jobs if job and job.status == "active"}
        plain = [key for key, worker in where.items() if worker == PLAIN]
        return where if len(where) == 4 and len(plain) == 2 else None

    where = await eventually(two_active_on_each, within=MARGIN, what="2 jobs on each worker")
    on_plain = next(key for key, worker in where.items() if worker == PLAIN)
    on_tracked = next(key for key, worker in where.items() if worker != PLAIN)
    for job_id in (on_plain, on_tracked):
        status, body = cluster.http("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert status == 202, body

    settled = await cluster.settle(
        "a plain SAQ worker and producer on the queue", [*job_ids, *produced],
        recovered_by="tracked worker: adopted; reconciler: repaired from redis",
        within=2 * 3 + recovery_bound(cluster.settings) + MARGIN,
    )  # fmt: skip
    settled.expect(completed=10, failed_with_reason=2)
    for job_id in (on_plain, on_tracked):
        row = settled.rows[job_id]
        assert (row.status, row.error) == ("aborted", "cancelled by API request"), row
    ran_by = {i: str(r.worker_id) for i, r in settled.rows.items()}
    assert sum(ran_by[i] == PLAIN for i in job_ids) >= 2, ran_by  # repaired from Redis
    assert all(ran_by[key] != PLAIN for key in produced), ran_by
    in_redis = await queue.jobs([*job_ids, *produced])
    assert all(job is not None and job.status != Status.ABORTING for job in in_redis)
    assert set((await cluster.executions()).values()) == {1}, "no job ran twice"
    repaired = sum(e["repaired"] for e in cluster.events(REPAIRED))
    settled.saw(
        f"4 produced jobs adopted; {sum(ran_by[i] == PLAIN for i in job_ids)} rows of the "
        f"plain worker's jobs repaired ({repaired} repairs); 2 cancelled, none `aborting`"
    )

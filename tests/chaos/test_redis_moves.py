"""Issue 17's findings 1-3, each made to happen every time: Redis gone between a task's end and
its worker's finish or retry, a heartbeat still queued when its job times out, the replies to
a take lost. Whatever the worker's Redis moves meet, no job is lost, stuck, run twice when it
had ended, or left `running` on a worker that no longer runs it.

Every scenario is one line of the table the chaos suite prints, and asserts that line.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from saq.job import Job, Status

from tests.support.app import (
    chaos_gated,
    chaos_gated_failing_once,
    chaos_heartbeat_overrun,
    chaos_sleep,
)
from tests.support.cluster import MARGIN, Cluster
from tests.support.faults import REDIS_PY_GIVES_UP_WITHIN, recovery_bound, restart_redis
from tests.support.gate import Gate
from tests.support.rows import describe_row, eventually

REQUEUED = "job missing from redis, enqueued again"


async def test_redis_restarted_empty_between_jobs_end_and_their_finish_or_retry(
    cluster: Cluster,
) -> None:
    """Issue 17, finding 1 (and 3 for a finish). Four jobs wait at a gate, a fifth at another;
    Redis stops, the first gate opens, and every finish and retry the worker sends fails
    (Redis stays down longer than redis-py retries); Redis comes back empty, and a few
    seconds later the fifth job ends. On 424c7d6 the jobs whose finish failed ran again
    after they had succeeded, or stayed `running` for good (the reconciler left a running
    row to its live worker for ever); and a job still running was enqueued again while its
    worker's record was not back yet.

    Catches: a finish that does not reach the row when Redis cannot be reached (those jobs
    run twice or end `failed`), the limit on leaving a running row to its live worker
    removed (a retried job can stay `running`), and taking a worker whose record is not
    back yet for lost (the fifth job would run twice).
    """
    gate, later = Gate(cluster.base / "gate"), Gate(cluster.base / "later")
    worker = cluster.start_worker()
    finishing = await cluster.submit(2, chaos_gated, gate=gate.path)
    retrying = await cluster.submit(2, chaos_gated_failing_once, gate=gate.path)
    [through] = await cluster.submit(1, chaos_gated, gate=later.path)
    await gate.reached_by(4)
    await later.reached_by(1)
    back = await restart_redis(cluster, down_for=REDIS_PY_GIVES_UP_WITHIN, while_down=gate.open)
    settings = cluster.settings
    await asyncio.sleep(max(0.0, back + settings.worker_lost_after + 2 - time.monotonic()))
    later.open()  # once the reconciler had every chance to take the fifth job from its worker

    settled = await cluster.settle(
        "redis restarted empty between jobs' end and their finish or retry",
        [*finishing, *retrying, through],
        recovered_by="worker: outcome to the row; reconciler: enqueued again",
        within=recovery_bound(settings) + MARGIN,
    )  # fmt: skip
    settled.expect(completed=5)
    runs = {**gate.runs(), **later.runs()}
    once, twice = [*finishing, through], retrying
    assert {key: runs[key] for key in once} == {key: [1] for key in once}, runs
    assert {key: runs[key] for key in twice} == {key: [1, 2] for key in twice}, runs
    requeued = {e["job_id"] for e in cluster.events(REQUEUED)}
    assert requeued <= set(retrying), "a job that had finished, or still ran, was run again"
    assert worker.process.poll() is None
    settled.saw(
        f"2 finished while Redis was down and 1 ran through it, each run once; 2 retried, "
        f"each run twice ({len(requeued)} x enqueued again)"
    )


async def test_a_heartbeat_still_queued_when_its_job_times_out_does_not_outlive_the_retry(
    cluster: Cluster,
) -> None:
    """Issue 17, finding 2. Five jobs heartbeat until their 2 s timeout; meanwhile Redis
    holds back every write for 4 s (CLIENT PAUSE), so each heartbeat after the first waits
    in the worker's batcher behind it, and the jobs time out and are retried (5 s delay)
    during the pause. On 424c7d6 the queued heartbeats were sent after the retries: Redis
    held those jobs `active`, the timeout error gone, and the reconciler put their rows back
    to `running`. SAQ's sweep of over-time jobs is pushed out of the window: the worker's own
    timeout is the path under test.

    Catches: a cancelled caller's unsent commands still sent (the jobs would read `active`
    in Redis after their retry).
    """
    cluster.start_worker(SWEEP_INTERVAL="100000")  # one sweep, at start: not over-time jobs
    queue = await cluster.queue()
    jobs = []
    for _ in range(5):
        job = Job(
            function=chaos_heartbeat_overrun.__qualname__,
            kwargs={"every": 0.01},
            timeout=2,
            retries=2,
            retry_delay=5,
            retry_backoff=False,
        )
        enqueued = await queue.enqueue(job)
        assert enqueued is not None
        jobs.append(enqueued)
    row_ids = [str(UUID(job.meta["job_id"])) for job in jobs]
    await cluster.wait_until_status(row_ids, {"running"}, 5)
    await queue.redis.execute_command("CLIENT", "PAUSE", "4000", "WRITE")

    async def retried() -> bool:
        rows = await cluster.rows(row_ids)
        return all(r.status == "queued" and r.attempts == 1 for r in rows.values())

    async def explain() -> str:
        rows = await cluster.rows(row_ids)
        return "\n".join([*(describe_row(r) for r in rows.values()), cluster.logs()])

    await eventually(
        retried, within=MARGIN, what="every job retried after its timeout", explain=explain
    )
    await asyncio.sleep(0.5)  # a heartbeat sent after its retry would have landed by now
    in_redis = await queue.jobs(job.key for job in jobs)
    seen = [(job.status, str(job.error or "").strip().splitlines()[-1:]) for job in in_redis if job]
    assert all(
        status == Status.QUEUED and lines and "TimeoutError" in lines[0] for status, lines in seen
    ), f"each job queued again with its timeout error, as SAQ leaves it: {seen}"
    back_to_running = await rows_during_the_retry_delay(cluster, row_ids)
    assert back_to_running == set(), f"rows put back to `running` after their retry: {seen}"

    settled = await cluster.settle(
        "a heartbeat queued when its job timed out", row_ids,
        recovered_by="worker: SAQ's retry, then the next attempt",
        within=5 + recovery_bound(cluster.settings) + MARGIN,
    )  # fmt: skip
    settled.expect(completed=5)
    assert set((await cluster.executions()).values()) == {2}
    settled.saw(
        "5 x `queued` with the timeout error in Redis after the retry, none back to `running`"
    )


async def rows_during_the_retry_delay(cluster: Cluster, row_ids: list[str]) -> set[str]:
    """Until every job's second attempt starts, the rows seen `running` in their first."""
    back: set[str] = set()

    async def second_attempts_started() -> bool:
        rows = await cluster.rows(row_ids)
        back.update(i for i, r in rows.items() if r.status == "running" and r.attempts == 1)
        return all(r.attempts == 2 for r in rows.values())

    await eventually(second_attempts_started, within=5 + MARGIN, what="the second attempts")
    return back


async def test_replies_to_a_take_lost_strand_no_job(cluster: Cluster) -> None:
    """Issue 17, finding 3 (a take). Redis is told to close any connection whose reply grows
    past 32 KB (client-output-buffer-limit) after it ran the command, and ten jobs of 200 KB
    wait: every take that moves one of them to the active list has its reply lost, until the
    limit is lifted a second after the first. On 424c7d6 the jobs sat there, taken by no
    one, until SAQ's sweep found them (`swept`), 5 s each.

    Catches: a take whose lost reply strands the jobs it moved (they would be swept).
    """
    queue = await cluster.queue()
    limit = "client-output-buffer-limit"
    await queue.redis.config_set(limit, "normal 32768 0 0")
    job_ids = await cluster.submit(10, chaos_sleep, seconds=0.2, payload="x" * 200_000)
    cluster.start_worker()

    async def taken() -> bool:  # no reply of a take can reach the worker: each was lost
        return await queue.count("active") > 0

    await eventually(taken, within=MARGIN, what="the worker's first take")
    await asyncio.sleep(1)  # the takes sent again meet the limit too
    await queue.redis.config_set(limit, "normal 0 0 0")  # replies reach the worker again

    settled = await cluster.settle(
        "replies to a take lost", job_ids,
        recovered_by="worker: the take's jobs claimed again",
        within=recovery_bound(cluster.settings) + MARGIN,
    )  # fmt: skip
    settled.expect(completed=10)
    swept = [i for i, row in settled.rows.items() if any("swept" in str(e) for e in row.errors)]
    assert swept == [], settled.explain()
    assert not cluster.events("sweeping job")
    assert set((await cluster.executions()).values()) == {1}
    settled.saw("takes' replies lost for 1 s: none swept, each job run once")

"""The outbox's enqueue is one round trip to Redis, and survives Redis losing its scripts.

Catches: redis-py's registered script, which asks Redis whether the script exists before
every pipeline (a second round trip for each batch of triggers); and a script cache Redis
lost (a restart, SCRIPT FLUSH) failing the enqueue instead of loading the script and
sending again only the calls Redis refused.
"""

from __future__ import annotations

from typing import Any

from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.worker.tasks import trigger_test

ARGUMENTS = {"message": "m", "sleep_seconds": 0}


async def _calls(queue: TrackedQueue) -> dict[str, int]:
    stats: dict[str, Any] = await queue.redis.info("commandstats")
    return {name: value["calls"] for name, value in stats.items()}


async def test_an_enqueue_asks_redis_nothing_but_the_enqueue(
    queue: TrackedQueue, make_enqueuer: Any
) -> None:
    enqueuer: Enqueuer = make_enqueuer()
    await enqueuer.enqueue(trigger_test, dict(ARGUMENTS))  # the script is loaded by now
    before = await _calls(queue)
    record = await enqueuer.enqueue(trigger_test, dict(ARGUMENTS))
    after = await _calls(queue)
    asked = {name for name in after if after[name] != before.get(name)}
    assert "cmdstat_script|exists" not in asked
    assert "cmdstat_evalsha" in asked
    assert await queue.job(str(record.job_id)) is not None


async def test_an_enqueue_after_redis_lost_its_scripts_loads_them_and_enqueues_each_once(
    queue: TrackedQueue, make_enqueuer: Any
) -> None:
    enqueuer: Enqueuer = make_enqueuer()
    await enqueuer.enqueue(trigger_test, dict(ARGUMENTS))
    await queue.redis.script_flush()
    records = [await enqueuer.enqueue(trigger_test, dict(ARGUMENTS)) for _ in range(3)]
    for record in records:
        job = await queue.job(str(record.job_id))
        assert job is not None
        assert job.status == "queued"
    queued = await queue.redis.lrange(queue.namespace("queued"), 0, -1)
    ids = [job_id.decode() for job_id in queued]
    assert len(ids) == len(set(ids)), "each job on the queue once"

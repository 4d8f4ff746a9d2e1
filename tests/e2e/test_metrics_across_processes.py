"""Job metrics counted in worker processes reach the API's `/metrics` through Redis.

Two workers run as separate processes with the README's command (on one machine here; they
share nothing with the API but Redis and PostgreSQL, as on other machines). The scrape adds
up what both counted.
"""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from app.asgi import create_app
from tests.support import (
    APP,
    VENV_BIN,
    Running,
    Servers,
    app_env,
    eventually,
    make_settings,
    migrate,
)
from tests.support.scrape import samples, value

JOBS = 6  # half of them fail


async def test_the_scrape_adds_up_what_every_worker_process_counted(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, servers.redis_url)
    command = [str(VENV_BIN / "litestar"), "--app", APP, "workers", "run"]
    env = app_env(settings, WORKER_CONCURRENCY="2")
    workers = [Running(command, env, f"worker {n}") for n in (1, 2)]
    processes.extend(workers)
    for worker in workers:
        worker.wait_for_line(lambda line: '"worker started"' in line)
    labels = {"queue": settings.queue_name, "task": "trigger_test"}

    async with AsyncTestClient(app=create_app(settings)) as client:
        for n in range(JOBS):
            body = {"message": f"job {n}", "sleep_seconds": 0.2, "fail": n % 2 == 1}
            assert (await client.post("/api/v1/tasks/trigger-test", json=body)).status_code == 202

        async def counted() -> dict[Any, float] | None:
            scrape = samples((await client.get("/metrics")).text)
            done = value(scrape, "bgjobs_finished_total", **labels, status="complete")
            failed = value(scrape, "bgjobs_finished_total", **labels, status="failed")
            return scrape if (done, failed) == (JOBS // 2, JOBS // 2) else None

        scrape = await eventually(counted, within=60, what="both workers' counts in the scrape")
    assert value(scrape, "bgjobs_enqueued_total", **labels) == JOBS
    failures = value(scrape, "bgjobs_attempt_failures_total", **labels, exception="TestTaskFailure")
    assert failures == JOBS // 2
    assert value(scrape, "bgjobs_run_seconds_count", **labels) == JOBS
    assert value(scrape, "bgjobs_live_workers", queue=settings.queue_name) == 2
    ran_jobs = [w for w in workers if '"job finished"' in w.output]
    assert len(ran_jobs) == 2, "both workers ran jobs, so both counted some"

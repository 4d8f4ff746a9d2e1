"""A worker process killed while it runs a job: `GET /api/v1/workers` first lists it with the
job, then, once its record has expired in Redis, flags it as lost with the job still running."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from app.asgi import create_app
from tests.support import VENV_BIN, Running, Servers, app_env, eventually, make_settings, migrate
from tests.support.app import REGISTRY, TEST_APP


async def test_a_killed_worker_is_flagged_with_the_job_it_was_running(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    migrate(fresh_database_url)
    # Its record is rewritten every 2 s and kept 3 s: it expires soon after the kill.
    settings = make_settings(fresh_database_url, servers.redis_url, worker_lost_after=6)
    env = app_env(settings, WORKER_LOST_AFTER="6")
    worker = Running([str(VENV_BIN / "litestar"), "--app", TEST_APP, "workers", "run"], env, "w")
    processes.append(worker)
    worker.wait_for_line(lambda line: '"worker started"' in line)
    async with AsyncTestClient(app=create_app(settings, REGISTRY)) as client:
        answer = await client.post(
            "/api/v1/tasks/trigger-test", json={"message": "long", "sleep_seconds": 120}
        )
        job_id = answer.json()["job_id"]

        async def running_on_a_live_worker() -> dict[str, Any] | None:
            found = (await client.get("/api/v1/workers")).json()["workers"]
            held = [w for w in found if [j for j in w["running"] if j["job_id"] == job_id]]
            return held[0] if held else None

        live = await eventually(running_on_a_live_worker, within=30, what="the job on its worker")
        worker.kill()

        async def flagged() -> dict[str, Any] | None:
            body = (await client.get("/api/v1/workers")).json()
            lost = [w for w in body["lost_workers"] if w["id"] == live["id"]]
            return lost[0] if lost and not body["workers"] else None

        lost = await eventually(flagged, within=30, what="the killed worker to be flagged")
        assert [job["job_id"] for job in lost["running"]] == [job_id]
        assert lost["queue"] == settings.queue_name

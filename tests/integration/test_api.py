"""The HTTP API on real PostgreSQL and Redis: trigger, reads, and every kind of bad input."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

from litestar.testing import AsyncTestClient
from saq.job import Status
from saq.queue import Queue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.asgi import create_app
from app.auth.roles import OPEN_MODE_ACTOR
from app.config import Settings
from app.db.models import BackgroundJob
from app.jobs.http.shared.schemas import WITHOUT_NUL
from tests.support import count_rows, eventually, free_port

TRIGGER = "/api/v1/tasks/trigger-test"
SEED_BODY = {"message": "Test message", "user_id": None, "project_id": None}


async def test_the_seed_request_is_accepted_with_the_exact_body(
    client: AsyncTestClient[Any], session: AsyncSession, queue: Queue
) -> None:
    response = await client.post(TRIGGER, json=SEED_BODY)
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"message", "job_id"}
    assert body["message"] == "Test task accepted and queued for processing"
    job_id = UUID(body["job_id"])

    # No worker runs here: what the response promised must already be true.
    session.expire_all()
    row = await session.scalar(select(BackgroundJob).where(BackgroundJob.job_id == job_id))
    assert row is not None
    assert (row.status, row.task_name, row.user_id, row.project_id) == (
        "queued",
        "trigger_test",
        None,
        None,
    )
    assert row.arguments == {"message": "Test message", "sleep_seconds": 0.1, "fail": False}
    job = await queue.job(str(job_id))
    assert job is not None
    assert job.status == Status.QUEUED


async def test_user_and_project_ids_and_the_demo_fields_are_recorded(
    client: AsyncTestClient[Any], session: AsyncSession
) -> None:
    user_id, project_id = uuid4(), uuid4()
    response = await client.post(
        TRIGGER,
        json={
            "message": "m",
            "user_id": str(user_id),
            "project_id": str(project_id),
            "sleep_seconds": 2.5,
            "fail": True,
        },
    )
    assert response.status_code == 202
    job = (await client.get(f"/api/v1/jobs/{response.json()['job_id']}")).json()
    assert (job["user_id"], job["project_id"]) == (str(user_id), str(project_id))
    assert job["arguments"] == {"message": "m", "sleep_seconds": 2.5, "fail": True}


async def test_a_job_can_be_read_back_by_its_id(client: AsyncTestClient[Any]) -> None:
    job_id = (await client.post(TRIGGER, json=SEED_BODY)).json()["job_id"]
    response = await client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200
    job = response.json()
    assert job["job_id"] == job_id
    assert (job["status"], job["attempts"]) == ("queued", 0)
    assert (job["result"], job["error"], job["started_at"], job["completed_at"]) == (None,) * 4
    assert job["created_at"]
    # Who asked (open mode here), and no SAQ key or schedule of its own: the outbox made it.
    assert job["enqueued_by"] == OPEN_MODE_ACTOR
    assert (job["job_key"], job["cron"], job["scheduled_at"]) == (None, None, None)


async def test_an_unknown_job_id_is_404_and_a_malformed_one_400(
    client: AsyncTestClient[Any],
) -> None:
    missing = await client.get(f"/api/v1/jobs/{uuid4()}")
    assert missing.status_code == 404
    assert "no job" in missing.json()["detail"]
    malformed = await client.get("/api/v1/jobs/not-a-uuid")
    assert malformed.status_code == 400
    assert "job_id must be a UUID" in malformed.json()["detail"]
    # A UUIDv7 whose time is past year 9999 (any id may come in a path): no such job.
    far = "ffffffff-ffff-73e7-bfff-ffffffffffff"
    for path in (f"/api/v1/jobs/{far}", f"/monitor/jobs/{far}", f"/api/v1/jobs/{far}/cancel"):
        answer = await (client.post(path) if path.endswith("cancel") else client.get(path))
        assert answer.status_code == 404, (path, answer.text)


async def test_jobs_can_be_listed_newest_first_and_filtered(client: AsyncTestClient[Any]) -> None:
    user_id = uuid4()
    mine = [
        (await client.post(TRIGGER, json={"message": str(i), "user_id": str(user_id)})).json()[
            "job_id"
        ]
        for i in range(3)
    ]
    await client.post(TRIGGER, json={"message": "someone else"})

    page = (await client.get("/api/v1/jobs", params={"user_id": str(user_id)})).json()
    assert page["total"] == 3
    assert [item["job_id"] for item in page["items"]] == list(reversed(mine))

    limited = (await client.get("/api/v1/jobs", params={"limit": 1, "offset": 1})).json()
    assert (limited["total"], len(limited["items"])) == (4, 1)
    past_the_end = (await client.get("/api/v1/jobs", params={"offset": 10})).json()
    assert (past_the_end["total"], past_the_end["items"]) == (4, [])
    queued = (await client.get("/api/v1/jobs", params={"status": "queued"})).json()
    assert queued["total"] == 4
    complete = (await client.get("/api/v1/jobs", params={"status": "complete"})).json()
    assert complete["total"] == 0
    bad = await client.get("/api/v1/jobs", params={"status": "exploded"})
    assert bad.status_code == 400


async def test_with_redis_down_the_trigger_is_accepted_and_the_row_kept_for_later(
    settings: Settings, session: AsyncSession, engine: Any
) -> None:
    dead_redis = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with AsyncTestClient(app=create_app(dead_redis)) as client:
        response = await client.post(TRIGGER, json=SEED_BODY)
    assert response.status_code == 202
    job_id = UUID(response.json()["job_id"])
    session.expire_all()
    row = await session.scalar(select(BackgroundJob).where(BackgroundJob.job_id == job_id))
    assert row is not None
    assert row.status == "queued"


async def test_a_repeated_idempotency_key_returns_the_same_job_and_one_row(
    client: AsyncTestClient[Any], session: AsyncSession, queue: Queue
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post(TRIGGER, json=SEED_BODY, headers=headers)
    again = await client.post(TRIGGER, json=SEED_BODY, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json() == again.json()
    assert await count_rows(session) == 1
    assert await queue.count("queued") == 1


async def test_concurrent_requests_with_one_idempotency_key_make_one_row(
    client: AsyncTestClient[Any], session: AsyncSession
) -> None:
    import asyncio

    headers = {"Idempotency-Key": "burst"}
    answers = await asyncio.gather(
        *(client.post(TRIGGER, json=SEED_BODY, headers=headers) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert await count_rows(session) == 1


async def test_an_idempotency_key_reused_with_another_body_is_a_409(
    client: AsyncTestClient[Any], session: AsyncSession
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert (await client.post(TRIGGER, json=SEED_BODY, headers=headers)).status_code == 202
    other = await client.post(TRIGGER, json={"message": "other"}, headers=headers)
    assert other.status_code == 409
    assert "different request body" in other.json()["detail"]
    assert await count_rows(session) == 1
    too_long = await client.post(TRIGGER, json=SEED_BODY, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400
    assert await count_rows(session) == 1


async def test_a_queued_job_cancelled_through_the_api_ends_aborted(
    client: AsyncTestClient[Any], session: AsyncSession, queue: Queue
) -> None:
    job_id = (await client.post(TRIGGER, json=SEED_BODY)).json()["job_id"]
    response = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json() == {"message": "cancellation requested", "job_id": job_id}

    async def aborted() -> dict[str, Any] | None:
        job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
        return job if job["status"] == "aborted" else None

    job = await eventually(aborted, what="aborted row")
    assert job["error"] == "cancelled by API request"
    assert await queue.count("queued") == 0
    again = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert (await client.post(f"/api/v1/jobs/{uuid4()}/cancel")).status_code == 404
    assert (await client.post("/api/v1/jobs/nope/cancel")).status_code == 400


async def test_with_postgres_down_the_api_is_503_and_enqueues_nothing(
    settings: Settings, queue: Queue
) -> None:
    dead_db = replace(
        settings, database_url=f"postgresql+asyncpg://user:password@127.0.0.1:{free_port()}/app_db"
    )
    async with AsyncTestClient(app=create_app(dead_db)) as client:
        trigger = await client.post(TRIGGER, json=SEED_BODY)
        read = await client.get(f"/api/v1/jobs/{uuid4()}")
        health = await client.get("/health")
        ready = await client.get("/ready")
    assert trigger.status_code == 503
    assert "database unavailable" in trigger.json()["detail"]
    assert read.status_code == 503
    assert health.status_code == 200  # the process serves: not a reason to restart it
    assert ready.status_code == 503
    assert ready.json()["database"].startswith("unavailable")
    assert await queue.count("queued") == 0


async def test_ready_when_both_servers_answer_and_migrations_are_at_head(
    client: AsyncTestClient[Any],
) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready", "database": "ok", "redis": "ok", "migrations": "ok"
    }  # fmt: skip


async def test_the_saq_web_ui_shows_the_queue_and_the_job(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    job_id = (await client.post(TRIGGER, json=SEED_BODY)).json()["job_id"]
    page = await client.get("/saq")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    queues = (await client.get("/saq/api/queues")).json()["queues"]
    assert settings.queue_name in [q["name"] for q in queues]
    job = (await client.get(f"/saq/api/queues/{settings.queue_name}/jobs/{job_id}")).json()
    assert job["job"]["key"] == job_id


async def test_the_openapi_schema_says_what_the_api_does(client: AsyncTestClient[Any]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths, components = schema["paths"], schema["components"]["schemas"]
    job, cancel = "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel"
    assert {TRIGGER, job, cancel, "/api/v1/jobs", "/health"} <= set(paths)
    assert [p for p in paths if p.startswith(("/saq", "/schema"))] == []  # not the API's
    # Every answer each operation can give, errors with the one error body.
    guarded = {"401": "", "403": "", "429": ""}  # no key, too little access, too many tries
    answers = {
        (TRIGGER, "post"): {
            "202": "JobAccepted",
            "400": "",
            "409": "",
            "413": "",
            "415": "",
            "503": "",
        },
        (job, "get"): {"200": "JobRead", "400": "", "404": "", "503": ""},
        (cancel, "post"): {"202": "JobCancelRequested", "400": "", "404": "", "409": "", "503": ""},
        ("/api/v1/jobs", "get"): {"200": "JobPage", "400": "", "503": ""},
    }
    answers = {operation: {**guarded, **statuses} for operation, statuses in answers.items()}
    answers[("/health", "get")] = {"200": "Alive"}
    answers[("/ready", "get")] = {"200": "Readiness", "503": "Readiness"}
    for (path, method), statuses in answers.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == set(statuses), (path, method)
        for status, body in statuses.items():
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{body or 'ErrorBody'}", (path, status)
    # The body: strict types, its limits, and no unknown fields.
    trigger = components["TriggerTestRequest"]
    assert trigger["additionalProperties"] is False
    assert trigger["properties"]["fail"] == {"type": "boolean", "default": False}
    assert trigger["properties"]["message"] == {
        "type": "string", "minLength": 1, "maxLength": 10_000, "pattern": WITHOUT_NUL,
    }  # fmt: skip
    key = paths[TRIGGER]["post"]["parameters"][0]
    assert (key["name"], key["in"], key["required"]) == ("Idempotency-Key", "header", False)
    assert {k: key["schema"][k] for k in ("type", "minLength", "maxLength")} == {
        "type": "string", "minLength": 1, "maxLength": 255,
    }  # fmt: skip
    for path, method in ((job, "get"), (cancel, "post")):
        (job_id,) = paths[path][method]["parameters"]
        assert (job_id["in"], job_id["schema"]["format"]) == ("path", "uuid")
    query = {p["name"]: p["schema"] for p in paths["/api/v1/jobs"]["get"]["parameters"]}
    assert (query["limit"]["minimum"], query["limit"]["maximum"]) == (1, 200)
    assert (query["offset"]["minimum"], query["offset"]["maximum"]) == (0, 10_000)
    user_id = {k: v for k, v in query["user_id"].items() if k != "description"}
    assert user_id == {"type": "string", "format": "uuid"}  # absent, never null
    assert query["task_name"]["maxLength"] == 200


async def test_reads_give_their_database_connection_back(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    # More reads than the pool holds connections (DB_POOL_SIZE and as many again): a read
    # that kept its connection would leave the last ones waiting for one.
    job_id = (await client.post(TRIGGER, json={"message": "read me"})).json()["job_id"]
    for _ in range(settings.db_pool_size * 2 + 5):
        assert (await client.get(f"/api/v1/jobs/{job_id}")).status_code == 200
        assert (await client.get("/api/v1/jobs", params={"limit": 1})).status_code == 200

"""Keys, scopes, the audit log, open mode and the CLI, with real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from litestar import get
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.asgi import build_parts, create_app
from app.auth.guard import Authenticator
from app.auth.keys import digest, generate_key
from app.auth.roles import OPEN_MODE_ACTOR, Role
from app.config import Settings
from app.db.connection import autocommit_sessions
from app.db.models import ApiKey, BackgroundJob, JobAction
from app.worker.settings import REGISTRY
from tests.support import APP, ROOT, VENV_BIN, Servers, make_settings
from tests.support.access import BOOTSTRAP_KEY, auth_settings, bearer, make_key

TRIGGER = "/api/v1/tasks/trigger-test"
ADMIN = bearer(BOOTSTRAP_KEY)


@pytest.fixture
def settings(database_url: str, servers: Servers) -> Settings:
    return auth_settings(database_url, servers.redis_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


async def job_row(engine: AsyncEngine, job_id: str) -> BackgroundJob:
    async with async_sessionmaker(engine)() as session:
        row = await session.scalar(select(BackgroundJob).where(BackgroundJob.job_id == job_id))
    assert row is not None
    return row


async def actions_on(engine: AsyncEngine, job_id: str) -> list[JobAction]:
    async with async_sessionmaker(engine)() as session:
        statement = select(JobAction).where(JobAction.job_ids.contains([UUID(job_id)]))
        return list((await session.scalars(statement.order_by(JobAction.at))).all())


async def test_an_admin_creates_a_key_that_works_lists_it_without_secrets_and_revokes_it(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    created = await client.post(
        "/api/v1/keys", json={"role": "viewer", "name": "dashboard"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key, key_id = body["key"], body["id"]
    assert key.startswith("bgj_")
    assert body["prefix"] == key[:12]
    assert body["role"] == "viewer"
    assert (await client.get("/api/v1/jobs", headers=bearer(key))).status_code == 200
    assert (
        await client.post(TRIGGER, json={"message": "m"}, headers=bearer(key))
    ).status_code == 403

    listed = (await client.get("/api/v1/keys", headers=ADMIN)).json()
    mine = next(item for item in listed if item["id"] == key_id)
    assert set(mine) == {
        "id",
        "name",
        "prefix",
        "role",
        "project_id",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert key not in (await client.get("/api/v1/keys", headers=ADMIN)).text
    async with async_sessionmaker(engine)() as session:  # stored: the digest, never the key
        row = await session.get(ApiKey, UUID(key_id))
    assert row is not None
    assert row.key_hash == digest(key)

    revoked = await client.post(f"/api/v1/keys/{key_id}/revoke", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"]
    refused = await client.get("/api/v1/jobs", headers=bearer(key))  # this process: at once
    assert refused.status_code == 401
    assert refused.json()["detail"] == "unknown or revoked API key"
    assert (await client.post(f"/api/v1/keys/{uuid4()}/revoke", headers=ADMIN)).status_code == 404

    audit = (await client.get("/api/v1/audit?limit=50", headers=ADMIN)).json()
    mine_audited = [a for a in audit if body["prefix"] in (a["detail"] or "")]
    assert [(a["action"], a["actor"], a["role"], a["outcome"]) for a in mine_audited] == [
        ("key_revoke", "bootstrap", "admin", "ok"),  # newest first
        ("key_create", "bootstrap", "admin", "ok"),
    ]


async def test_an_admin_key_cannot_be_scoped_to_a_project(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/api/v1/keys",
        json={"role": "admin", "name": "x", "project_id": str(uuid4())},
        headers=ADMIN,
    )
    assert response.status_code == 400
    assert "cannot be scoped" in response.json()["detail"]


async def test_a_trigger_records_who_asked_and_a_scoped_key_fills_in_its_project(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    project = uuid4()
    _, scoped = await make_key(engine, Role.OPERATOR, project)
    response = await client.post(
        TRIGGER, json={"message": "m", "project_id": None}, headers=bearer(scoped)
    )
    assert response.status_code == 202
    row = await job_row(engine, response.json()["job_id"])
    assert (row.project_id, row.enqueued_by) == (project, scoped[:12])
    other = await client.post(
        TRIGGER, json={"message": "m", "project_id": str(uuid4())}, headers=bearer(scoped)
    )
    assert other.status_code == 403


async def test_a_scoped_key_lists_only_its_own_projects_jobs(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    project = uuid4()
    _, scoped = await make_key(engine, Role.VIEWER, project)
    for target in (project, uuid4(), None):
        body = {"message": "m", "project_id": str(target) if target else None}
        assert (await client.post(TRIGGER, json=body, headers=ADMIN)).status_code == 202
    page = (await client.get("/api/v1/jobs?limit=200", headers=bearer(scoped))).json()
    assert page["total"] == 1
    assert [job["project_id"] for job in page["items"]] == [str(project)]
    everything = (await client.get("/api/v1/jobs?limit=1", headers=ADMIN)).json()
    assert everything["total"] >= 3


async def test_each_cancel_leaves_an_audit_row_with_its_outcome(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    project = uuid4()
    _, operator = await make_key(engine, Role.OPERATOR)
    _, outsider = await make_key(engine, Role.OPERATOR, uuid4())
    body = {"message": "m", "project_id": str(project), "sleep_seconds": 60}
    job_id = (await client.post(TRIGGER, json=body, headers=ADMIN)).json()["job_id"]

    assert (
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(outsider))
    ).status_code == 404  # as if there were no such job; audited as forbidden
    assert (
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(operator))
    ).status_code == 202
    assert (
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(operator))
    ).status_code == 409

    rows = await actions_on(engine, job_id)
    assert [(r.action, r.actor, r.role, r.outcome, r.count) for r in rows] == [
        ("cancel", outsider[:12], "operator", "forbidden", 1),
        ("cancel", operator[:12], "operator", "ok", 1),
        ("cancel", operator[:12], "operator", "conflict", 1),
    ]
    assert rows[2].job_ids == [UUID(job_id)]
    assert rows[2].detail  # why it was refused


async def test_a_scoped_keys_bulk_call_never_touches_another_projects_job(
    client: AsyncTestClient[Any], settings: Settings, engine: AsyncEngine
) -> None:
    """Another project's job counts as one that does not exist: not acted on, not told apart
    from a missing one. Catches: the scope applied after the action (the foreign job was
    cancelled while the answer still said nothing was done to it)."""
    project = uuid4()
    _, scoped = await make_key(engine, Role.OPERATOR, project)
    queued = {"message": "m", "sleep_seconds": 60}
    own = await client.post(TRIGGER, json={**queued, "project_id": str(project)}, headers=ADMIN)
    foreign = await client.post(TRIGGER, json={**queued, "project_id": str(uuid4())}, headers=ADMIN)
    own_id, foreign_id = own.json()["job_id"], foreign.json()["job_id"]
    missing_id = str(uuid4())
    answer = await client.post(
        "/api/v1/jobs/bulk/cancel",
        json={"job_ids": [own_id, foreign_id, missing_id]},
        headers=bearer(scoped),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["job_ids"], body["acted_on"], body["not_found"]) == ([own_id], 1, 2)
    parts = build_parts(settings, REGISTRY)
    try:
        await parts.queue.connect()
        states = {key: await parts.queue.job(key) for key in (own_id, foreign_id)}
    finally:
        await parts.close()
    assert states[own_id] is not None
    assert states[foreign_id] is not None
    assert states[own_id].status == "aborted"
    assert states[foreign_id].status == "queued"  # untouched
    audited = await actions_on(engine, foreign_id)
    assert [(a.action, a.outcome) for a in audited] == [("bulk_cancel", "ok")]
    assert "1 of them another project's" in (audited[0].detail or "")


async def test_a_route_that_declares_no_role_is_refused_even_to_an_admin(
    settings: Settings,
) -> None:
    @get("/undeclared", sync_to_thread=False)
    def undeclared() -> str:
        return "should never be served"

    app = create_app(settings)
    app.register(undeclared)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/undeclared", headers=ADMIN)
        assert response.status_code == 403
        assert "declares no role" in response.json()["detail"]
        assert (await client.get("/undeclared")).status_code == 401


async def test_the_bootstrap_key_is_an_admin_and_a_wrong_scheme_is_refused(
    client: AsyncTestClient[Any],
) -> None:
    assert (await client.get("/api/v1/audit", headers=ADMIN)).status_code == 200
    basic = {"Authorization": f"Basic {BOOTSTRAP_KEY}"}
    assert (await client.get("/api/v1/audit", headers=basic)).status_code == 401
    near = bearer(BOOTSTRAP_KEY[:-1])
    assert (await client.get("/api/v1/audit", headers=near)).status_code == 401


async def test_open_mode_lets_everyone_in_and_records_them_as_anonymous(
    database_url: str, servers: Servers, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, servers.redis_url)  # AUTH_DISABLED=true, no key
    assert settings.open_mode
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post(TRIGGER, json={"message": "m"})
        assert response.status_code == 202
        assert (await client.get("/api/v1/keys")).status_code == 200
        assert (await client.get("/saq/api/queues")).status_code == 200
    row = await job_row(engine, response.json()["job_id"])
    assert row.enqueued_by == OPEN_MODE_ACTOR


async def test_no_key_is_made_in_open_mode_so_none_outlives_it(
    database_url: str, servers: Servers, engine: AsyncEngine
) -> None:
    """Anyone may call the API in open mode: a key made then would still administer it once
    ADMIN_API_KEY turns the checks on."""
    open_settings = make_settings(database_url, servers.redis_url)
    name = f"made anonymously {uuid4()}"
    async with AsyncTestClient(app=create_app(open_settings)) as client:
        refused = await client.post("/api/v1/keys", json={"role": "admin", "name": name})
        assert refused.status_code == 403, refused.text
        assert "open mode" in refused.json()["detail"]
        assert (await client.get("/api/v1/keys")).status_code == 200  # listing is harmless
    async with async_sessionmaker(engine)() as session:
        assert await session.scalar(select(ApiKey).where(ApiKey.name == name)) is None


async def test_a_revocation_elsewhere_is_seen_once_the_cached_answer_expires(
    settings: Settings, engine: AsyncEngine
) -> None:
    key_id, key = await make_key(engine, Role.OPERATOR)
    now = [1000.0]
    authenticator = Authenticator(
        autocommit_sessions(lambda: engine),
        open_mode=False,
        bootstrap_digest=None,
        ttl=10,
        touch_interval=60,
        clock=lambda: now[0],
    )
    first = await authenticator.principal_for(f"Bearer {key}")
    assert (first.role, first.actor, first.key_id) == (Role.OPERATOR, key[:12], key_id)
    async with async_sessionmaker(engine)() as session:  # another process revokes it
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=ApiKey.created_at)
        )
        await session.commit()
    now[0] += 9  # within the cache's time: still the cached answer (the documented bound)
    assert await authenticator.principal_for(f"Bearer {key}") == first
    now[0] += 2
    with pytest.raises(Exception, match="unknown or revoked"):
        await authenticator.principal_for(f"Bearer {key}")
    await authenticator.close()


async def test_last_used_at_is_written_at_most_once_per_interval(engine: AsyncEngine) -> None:
    key_id, key = await make_key(engine, Role.VIEWER)
    now = [1000.0]
    authenticator = Authenticator(
        autocommit_sessions(lambda: engine),
        open_mode=False,
        bootstrap_digest=None,
        clock=lambda: now[0],
    )

    async def used_at() -> Any:
        await authenticator.close()  # let the write it scheduled finish
        async with async_sessionmaker(engine)() as session:
            row = await session.get(ApiKey, key_id)
            assert row is not None
            return row.last_used_at

    await authenticator.principal_for(f"Bearer {key}")
    first = await used_at()
    assert first is not None
    now[0] += 30
    await authenticator.principal_for(f"Bearer {key}")
    assert await used_at() == first
    now[0] += 31
    await authenticator.principal_for(f"Bearer {key}")
    assert await used_at() > first


def litestar(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "litestar"), "--app", APP, "keys", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "DATABASE_URL": database_url, "AUTH_DISABLED": "false"},
    )  # fmt: skip


async def test_the_cli_creates_lists_and_revokes_keys_on_database_url(
    database_url: str, settings: Settings, engine: AsyncEngine
) -> None:
    project = uuid4()
    made = litestar(
        database_url, "create", "--role", "operator", "--project-id", str(project), "--name", "ci"
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("bgj_")
    assert "shown once" in made.stderr
    assert key not in made.stderr
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post(TRIGGER, json={"message": "m"}, headers=bearer(key))
        assert response.status_code == 202
    assert (await job_row(engine, response.json()["job_id"])).project_id == project

    listed = litestar(database_url, "list")
    line = next(line for line in listed.stdout.splitlines() if key[:12] in line)
    assert key not in listed.stdout
    assert "operator" in line
    assert str(project) in line
    revoked = litestar(database_url, "revoke", line.split()[0])
    assert revoked.returncode == 0, revoked.stderr
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await client.get("/api/v1/jobs", headers=bearer(key))).status_code == 401
    async with async_sessionmaker(engine)() as session:
        audited = (
            await session.scalars(select(JobAction).where(JobAction.detail.contains(key[:12])))
        ).all()
    assert sorted((a.action, a.actor) for a in audited) == [
        ("key_create", "cli"),
        ("key_revoke", "cli"),
    ]

    refused = litestar(database_url, "create", "--role", "admin", "--project-id", str(project))
    assert refused.returncode != 0
    assert "cannot be scoped" in refused.stderr


async def test_retries_and_aborts_from_saq_leave_audit_rows(
    client: AsyncTestClient[Any], settings: Settings, engine: AsyncEngine
) -> None:
    _, operator = await make_key(engine, Role.OPERATOR)
    jobs = []
    for action in ("abort", "retry"):
        body = {"message": "m", "sleep_seconds": 60}
        job_id = (await client.post(TRIGGER, json=body, headers=ADMIN)).json()["job_id"]
        path = f"/saq/api/queues/{settings.queue_name}/jobs/{job_id}/{action}"
        assert (await client.post(path, headers=bearer(operator))).status_code == 202
        jobs.append(job_id)
    missing = f"/saq/api/queues/{settings.queue_name}/jobs/{uuid4()}/abort"
    assert (await client.post(missing, headers=bearer(operator))).status_code == 404
    for job_id, action in zip(jobs, ("saq_abort", "saq_retry"), strict=True):
        rows = await actions_on(engine, job_id)
        assert [(r.action, r.actor, r.role, r.outcome) for r in rows] == [
            (action, operator[:12], "operator", "ok")
        ]


async def test_concurrent_requests_with_a_new_key_share_one_lookup(engine: AsyncEngine) -> None:
    _, key = await make_key(engine, Role.VIEWER)
    opened = []
    sessions = autocommit_sessions(lambda: engine)

    def counting() -> Any:
        opened.append(1)
        return sessions()

    authenticator = Authenticator(counting, open_mode=False, bootstrap_digest=None)
    found = await asyncio.gather(*(authenticator.principal_for(f"Bearer {key}") for _ in range(20)))
    assert {principal.role for principal in found} == {Role.VIEWER}
    await authenticator.close()
    assert len(opened) == 2  # one lookup, and one last_used_at write


async def test_an_address_that_fails_too_many_keys_is_refused_for_a_while(
    database_url: str, servers: Servers, engine: AsyncEngine
) -> None:
    """Past AUTH_FAILURES_PER_MINUTE wrong keys or logins, the address gets 429 (with
    Retry-After), its right key too; requests without a key are no guesses and do not count."""
    _, key = await make_key(engine, Role.VIEWER)
    limited = auth_settings(database_url, servers.redis_url, auth_failures_per_minute=3)
    async with AsyncTestClient(app=create_app(limited)) as client:
        for _ in range(5):
            assert (await client.get("/api/v1/jobs")).status_code == 401  # no key: not counted
        assert (await client.get("/api/v1/jobs", headers=bearer(key))).status_code == 200
        form = await client.get("/monitor/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        login = {"key": "bgj_" + "x" * 43, "next": "/monitor", "_csrf_token": token.group(1)}
        assert (await client.post("/monitor/login", data=login)).status_code == 401
        for wrong in (generate_key(), generate_key()):
            assert (await client.get("/api/v1/jobs", headers=bearer(wrong))).status_code == 401
        refused = await client.get("/api/v1/jobs", headers=bearer(key))
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "too many failed" in refused.json()["detail"]
        page = await client.post(
            "/monitor/login", data={**login, "key": key}, follow_redirects=False
        )
        assert page.status_code == 429
        assert "too many failed" in page.text
        assert "bgj_session" not in page.headers.get("set-cookie", "")


async def test_a_flood_of_made_up_keys_does_not_push_a_real_key_out_of_the_cache(
    engine: AsyncEngine,
) -> None:
    """Unknown keys are remembered apart from known ones, each bounded: the flood fills only
    its own cache, and the real key is still answered without a query."""
    _, key = await make_key(engine, Role.VIEWER)
    sessions = autocommit_sessions(lambda: engine)
    looked_up: list[int] = []

    def counting() -> Any:
        looked_up.append(1)
        return sessions()

    authenticator = Authenticator(
        counting, open_mode=False, bootstrap_digest=None, max_known=5, max_unknown=5
    )
    await authenticator.principal_for(f"Bearer {key}")
    await authenticator.close()
    before = len(looked_up)
    for _ in range(20):
        with pytest.raises(Exception, match="unknown or revoked"):
            await authenticator.principal_for(f"Bearer {generate_key()}")
    assert len(looked_up) == before + 20  # one query per made-up key
    await authenticator.principal_for(f"Bearer {key}")
    assert len(looked_up) == before + 20  # the real key: from the cache


async def test_each_project_has_its_own_idempotency_keys(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    """Another tenant's use of a key neither blocks this one's (a 409 before) nor returns
    its job; within a project, keys work as before."""
    _, tenant_a = await make_key(engine, Role.OPERATOR, uuid4())
    _, tenant_b = await make_key(engine, Role.OPERATOR, uuid4())
    key = {"Idempotency-Key": f"order-{uuid4()}"}

    async def trigger(tenant: str, message: str) -> Any:
        return await client.post(
            TRIGGER, json={"message": message}, headers={**bearer(tenant), **key}
        )

    first_a = await trigger(tenant_a, "a's order")
    first_b = await trigger(tenant_b, "b's order")
    assert (first_a.status_code, first_b.status_code) == (202, 202), first_b.text
    assert first_a.json()["job_id"] != first_b.json()["job_id"]
    again_a = await trigger(tenant_a, "a's order")
    assert again_a.json()["job_id"] == first_a.json()["job_id"]
    assert (await trigger(tenant_a, "another body")).status_code == 409

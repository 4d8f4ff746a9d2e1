"""What real processes log: never a key or its digest, never a value the viewers see masked,
never a SQL statement's values; and one loud line in open mode.

The API runs as `uvicorn --factory app.asgi:create_app` and the worker as `litestar ...
workers run`, as deployed, so their whole output (uvicorn's and SAQ's lines included) is
what is checked, at LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth.keys import digest, generate_key
from app.auth.roles import Role
from app.config import Settings
from app.jobs.outbox.enqueuer import Enqueuer
from tests.support import (
    VENV_BIN,
    Running,
    Servers,
    WaitForRow,
    app_env,
    create_database,
    drop_database,
    eventually,
    make_settings,
    migrate,
    psql,
)
from tests.support.access import BOOTSTRAP_KEY, api, auth_settings, call, make_key
from tests.support.app import REGISTRY, TEST_APP, refuse_credentials

SQL_VALUES = re.compile(r"\[parameters: ")  # SQLAlchemy's spelling of a statement's values


async def test_no_key_reaches_the_log_whatever_the_answer(
    database_url: str, servers: Servers
) -> None:
    settings = auth_settings(database_url, servers.redis_url)
    engine = create_async_engine(settings.database_url)
    _, viewer = await make_key(engine, Role.VIEWER)
    _, revoked = await make_key(engine, Role.OPERATOR, revoked=True)
    await engine.dispose()
    env = app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, LOG_LEVEL="DEBUG")
    with api(env) as (process, port):
        status, created = call(
            port, "POST", "/api/v1/keys", BOOTSTRAP_KEY, {"role": "operator", "name": "n"}
        )
        assert status == 201
        made = created["key"]
        trigger = ("POST", "/api/v1/tasks/trigger-test")
        assert call(port, *trigger, made, {"message": "m"})[0] == 202
        assert call(port, *trigger, viewer, {"message": "m"})[0] == 403
        assert call(port, "GET", "/api/v1/jobs", revoked)[0] == 401
        assert call(port, "GET", "/api/v1/jobs", made + "x")[0] == 401
        assert call(port, "GET", "/saq/api/queues", made[:-1])[0] == 401
    output = process.output
    assert '"access checks on"' in output
    assert output.count('"logger":"uvicorn.access"') >= 6  # the requests were logged
    for secret in (BOOTSTRAP_KEY, viewer, revoked, made):
        assert secret not in output


async def test_open_mode_says_so_once_loudly_at_start(database_url: str, servers: Servers) -> None:
    settings = make_settings(database_url, servers.redis_url)  # AUTH_DISABLED=true, no key
    with api(app_env(settings)) as (process, port):
        assert call(port, "GET", "/api/v1/keys")[0] == 200
    warnings = [line for line in process.lines if "AUTH DISABLED" in line]
    assert len(warnings) == 1, process.tail()
    assert json.loads(warnings[0])["level"] == "warning"


async def test_a_failing_jobs_secret_arguments_never_reach_the_workers_log(
    settings: Settings, make_enqueuer: Callable[..., Enqueuer], wait_for_row: WaitForRow
) -> None:
    """SAQ logs each failed attempt at ERROR with the whole job: its arguments are shown
    masked (REDACT_KEYS, by pattern), the others as they are."""
    secrets = {"password": "pw-" + generate_key(), "db_password": "db-" + generate_key()}
    env = app_env(settings, LOG_LEVEL="DEBUG")
    command = [str(VENV_BIN / "litestar"), "--app", TEST_APP, "workers", "run"]
    worker = Running(command, env, "worker")
    try:
        worker.wait_for_line(lambda line: '"worker started"' in line)
        job = await make_enqueuer(REGISTRY).enqueue(
            refuse_credentials, {**secrets, "note": "kept as it is"}
        )
        await wait_for_row(job.job_id, lambda row: row.status == "failed", "failed")

        async def both_attempts_logged() -> list[str] | None:
            lines = [line for line in worker.lines if "Error processing job" in line]
            return lines if len(lines) == 2 else None

        lines = await eventually(both_attempts_logged, what="SAQ's line for each attempt")
    finally:
        worker.stop()
    for secret in secrets.values():
        assert secret not in worker.output, worker.tail(60)
    for line in lines:
        assert "'password': '***'" in line, line
        assert "'db_password': '***'" in line, line
        assert "'note': 'kept as it is'" in line, line
    assert not SQL_VALUES.search(worker.output)


@pytest.fixture
def own_database(servers: Servers) -> Iterator[str]:
    """A migrated database of this test's own (its settings are changed)."""
    name = create_database(servers)
    url = servers.database_url(name)
    migrate(url)
    yield url
    drop_database(servers, name)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    thread.start()
    return thread, done


async def test_a_database_error_during_a_key_lookup_logs_no_digest_and_no_sql_value(
    own_database: str, servers: Servers
) -> None:
    """A migration holds api_keys while a request brings a key the API has not seen: the
    lookup times out (a 503), and the error is logged with its SQL, not its values."""
    name = own_database.rsplit("/", 1)[1]
    psql(own_database, f"ALTER DATABASE {name} SET lock_timeout = '300ms'")
    settings = auth_settings(own_database, servers.redis_url)
    key = generate_key()
    engine = create_async_engine(settings.database_url)
    with api(app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, LOG_LEVEL="DEBUG")) as (process, port):
        async with engine.connect() as holder:
            await holder.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))
            status, body = await asyncio.to_thread(call, port, "GET", "/api/v1/jobs", key)
            await holder.rollback()
    await engine.dispose()
    assert (status, body["detail"]) == (503, "database unavailable, try again"), process.tail(20)
    output = process.output
    assert "SQL parameters hidden" in output, process.tail(40)  # the error was logged
    for secret in (key, digest(key), BOOTSTRAP_KEY, digest(BOOTSTRAP_KEY)):
        assert secret not in output
    assert not SQL_VALUES.search(output)


async def test_a_connection_dropped_mid_query_is_a_503_not_a_500(
    own_database: str, servers: Servers
) -> None:
    """The key lookup waits on a lock; its connection is then terminated by the server."""
    settings = auth_settings(own_database, servers.redis_url)
    key = generate_key()
    engine = create_async_engine(settings.database_url)
    with api(app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, LOG_LEVEL="DEBUG")) as (process, port):
        async with engine.connect() as holder:
            await holder.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))
            thread, answers = in_thread(lambda: call(port, "GET", "/api/v1/jobs", key))
            killed = 0
            for _ in range(200):  # the bound only stops a broken test
                async with engine.connect() as looking:  # its own snapshot of the activity
                    killed = int(
                        await looking.scalar(
                            text(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE wait_event_type = 'Lock' AND query LIKE '%api_keys%'"
                                " AND pid <> pg_backend_pid()"
                            )
                        )
                        or 0
                    )
                if killed:
                    break
                await asyncio.sleep(0.05)
            await holder.rollback()
            await asyncio.to_thread(thread.join, 30)
    await engine.dispose()
    assert killed == 1
    status, body = answers[0]
    assert (status, body["detail"]) == (503, "database unavailable, try again"), body
    for secret in (key, digest(key)):
        assert secret not in process.output
    assert not SQL_VALUES.search(process.output)


async def test_an_audit_row_that_cannot_be_written_is_logged_whole_and_the_action_stands(
    own_database: str, servers: Servers
) -> None:
    """The row is written once the action has happened: a failure to write it must neither
    undo nor hide the action. Here the table refuses every `cancel` row."""
    psql(
        own_database,
        "ALTER TABLE job_actions ADD CONSTRAINT refuse_cancels CHECK (action <> 'cancel')",
    )
    settings = auth_settings(own_database, servers.redis_url)
    with api(app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY)) as (process, port):
        trigger = {"message": "m", "sleep_seconds": 60}
        status, body = call(port, "POST", "/api/v1/tasks/trigger-test", BOOTSTRAP_KEY, trigger)
        assert status == 202, body
        job_id = body["job_id"]
        cancelled = call(port, "POST", f"/api/v1/jobs/{job_id}/cancel", BOOTSTRAP_KEY)
        assert cancelled[0] == 202, cancelled  # the action stands
        line = process.wait_for_line(lambda line: '"audit row not written"' in line)
    record = json.loads(line)
    assert record["level"] == "error"
    assert (record["actor"], record["role"], record["action"]) == ("bootstrap", "admin", "cancel")
    assert (record["job_ids"], record["outcome"], record["count"]) == ([job_id], "ok", 1)
    assert "refuse_cancels" in record["error"]
    assert not SQL_VALUES.search(process.output)

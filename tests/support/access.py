"""Access checks on in a test: settings with a bootstrap key, keys made in the table, a real
API process and calls to it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.auth.keys import ApiKeyService, digest
from app.auth.roles import CLI, Role
from app.config import Settings
from app.db.models import ApiKey
from tests.support.processes import Running
from tests.support.servers import APP, VENV_BIN, free_port, make_settings

BOOTSTRAP_KEY = "test-bootstrap-admin-key-0123456789abcdef"


def auth_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """A test's settings with the checks on and BOOTSTRAP_KEY as ADMIN_API_KEY."""
    return make_settings(
        database_url,
        redis_url,
        auth_disabled=False,
        admin_key_digest=digest(BOOTSTRAP_KEY),
        # Tests send many wrong keys from one address on purpose; the limit has its own tests.
        **{"auth_failures_per_minute": 0, **overrides},
    )


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


async def make_key(
    engine: AsyncEngine, role: Role, project_id: UUID | None = None, *, revoked: bool = False
) -> tuple[UUID, str]:
    """A key in `api_keys` (revoked if asked): its id and plaintext."""
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        created = await ApiKeyService(session).create_key(
            role=role, name=f"test {role}", project_id=project_id, actor=CLI
        )
        if revoked:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == created.row.id)
                .values(revoked_at=datetime.now(UTC))
            )
            await session.commit()
    return created.row.id, created.plaintext


def call(
    port: int, method: str, path: str, key: str | None = None, body: Any = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **bearer(key)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@contextmanager
def api(env: dict[str, str]) -> Iterator[tuple[Running, int]]:
    port = free_port()
    command = [str(VENV_BIN / "uvicorn"), "--factory", APP, "--host", "127.0.0.1"]
    process = Running([*command, "--port", str(port)], env, "api")
    try:
        # Its own line, not a 200 on the port: another test's server may hold a port this one
        # failed to bind (the machine is shared), and would answer in its place.
        process.wait_for_line(lambda line: "Uvicorn running on" in line)
        deadline = time.monotonic() + 60
        while True:  # the bound only stops a broken test
            try:
                if call(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or process.process.poll() is not None:
                raise AssertionError(f"api did not start:\n{process.tail()}")
            time.sleep(0.2)
        yield process, port
    finally:
        process.stop()

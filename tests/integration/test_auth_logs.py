"""What a real API process logs about access: never a key, and one loud line in open mode.

The API runs as `uvicorn --factory app.asgi:create_app`, as deployed, so its whole output
(uvicorn's access lines included) is what is checked, at LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import create_async_engine

from app.auth.roles import Role
from tests.support import Servers, app_env, make_settings
from tests.support.access import BOOTSTRAP_KEY, api, auth_settings, call, make_key


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

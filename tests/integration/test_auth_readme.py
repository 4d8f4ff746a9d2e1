"""The README's access commands, run as written: the CLI makes a key, the API makes another,
and the trigger works with a key (and not without one) once the checks are on."""

from __future__ import annotations

import json
import os
import subprocess

from app.auth.keys import generate_key
from tests.support import ROOT, VENV_BIN, Servers, app_env
from tests.support.access import api, auth_settings, call
from tests.support.readme import readme_block_after

SECTION = "## Access: roles and API keys"


def blocks() -> tuple[str, str, str]:
    section = "\n".join(
        ["", SECTION, (ROOT / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]]
    )
    assert section.count("```") == 6, "the section's three commands"
    create_cli = readme_block_after("with the CLI (on `DATABASE_URL`")
    create_api = readme_block_after("or through the API, as an admin")
    use = readme_block_after("and use it:")
    return create_cli, create_api, use


def bash(script: str, env: dict[str, str]) -> str:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=True, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    ).stdout  # fmt: skip


def test_the_readmes_commands_create_keys_and_use_them(database_url: str, servers: Servers) -> None:
    admin_key = generate_key()
    settings = auth_settings(database_url, servers.redis_url)
    env = app_env(settings, ADMIN_API_KEY=admin_key)
    create_cli, create_api, use = blocks()
    with api(env) as (_, port):
        here = {
            **env,
            "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}",
            "DATABASE_URL": database_url,
        }

        def local(command: str) -> str:
            return command.replace("localhost:8000", f"localhost:{port}")

        assert call(port, "POST", "/api/v1/tasks/trigger-test", None, {"message": "m"})[0] == 401
        out = bash(f'{create_cli}\n{local(use)} -sS -w "\\n%{{http_code}}"', here)
        body, status = out.rsplit("\n", 1)
        assert status == "202", out
        assert json.loads(body)["message"] == "Test task accepted and queued for processing"

        created = json.loads(bash(local(create_api) + " -sS", here))
        assert created["role"] == "viewer"
        assert call(port, "GET", "/api/v1/jobs", created["key"])[0] == 200
        assert (
            call(port, "POST", "/api/v1/tasks/trigger-test", created["key"], {"message": "m"})[0]
            == 403
        )

"""A worker and an API process started, with the README's commands, on a Redis the queue's moves
cannot run on (LMOVE taken away by `rename-command`): each stops at start, the one line that
names what is missing in its output.

Catches: a process that starts anyway (the worker would fail every take, the API would accept
jobs no worker can take), or that stops without saying why.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    APP,
    VENV_BIN,
    LocalRedis,
    Running,
    Servers,
    app_env,
    free_port,
    make_settings,
    migrate,
)


@pytest.fixture
def redis_without_lmove(tmp_path: Path) -> Iterator[LocalRedis]:
    options = ("--rename-command", "LMOVE", "")
    server = LocalRedis(tmp_path / "redis", free_port(), False, options=options)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["litestar", "--app", APP, "workers", "run"],
        ["uvicorn", "--factory", APP, "--host", "127.0.0.1", "--port", "{port}"],
    ],
    ids=["worker", "api"],
)
def test_a_process_refuses_a_redis_without_lmove_at_start(
    command: list[str],
    servers: Servers,
    fresh_database_url: str,
    redis_without_lmove: LocalRedis,
    processes: list[Running],
) -> None:
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, redis_without_lmove.url)
    argv = [str(VENV_BIN / command[0]), *(w.format(port=free_port()) for w in command[1:])]
    running = Running(argv, app_env(settings), command[0])
    processes.append(running)
    code = running.process.wait(timeout=60)
    assert code != 0, running.tail()

    version = redis_version(redis_without_lmove.port)
    line = f"Redis {version} at redis://127.0.0.1:{redis_without_lmove.port}/0: this process "
    line += "needs the commands LMOVE"
    said = [record(out) for out in running.lines]
    assert [r for r in said if r.get("event") == line and r.get("level") == "error"], running.tail()


def record(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def redis_version(port: int) -> str:
    info = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "server"], capture_output=True, text=True, check=True
    )
    return next(
        row.split(":", 1)[1].strip()
        for row in info.stdout.splitlines()
        if row.startswith("redis_version:")
    )

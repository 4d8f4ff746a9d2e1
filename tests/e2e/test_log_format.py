"""One log format: the API and the worker, started with docker-compose.yml's commands and the
container's defaults (no LOG_JSON, no terminal), write only JSON lines, uvicorn's access log
included; health checks are DEBUG lines, not INFO ones."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from typing import Any

import yaml

from app.config import Settings
from tests.support import ROOT, VENV_BIN, Running, Servers, app_env, free_port, make_settings

JOBS_PATH = "/api/v1/jobs?limit=1"
# litestar-saq's `workers run` prints a banner and its stop messages on the console, not
# through logging: the only lines allowed not to be JSON.
WORKER_CONSOLE = re.compile(
    r"^Starting SAQ Workers ─|^[┌│├└]|^Received SIGTERM, stopping workers|^SAQ workers stopped"
)


# Compose's `${NAME:-default}`, as it reads with no .env: the default.
COMPOSE_DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")


def compose_command(service: str, port: int = 8000) -> list[str]:
    """The service's command in docker-compose.yml, on loopback and the given port."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = [COMPOSE_DEFAULT.sub(r"\1", word) for word in compose["services"][service]["command"]]
    local = {"0.0.0.0": "127.0.0.1", "8000": str(port)}
    return [str(VENV_BIN / command[0]), *(local.get(word, word) for word in command[1:])]


def container_env(settings: Settings, level: str) -> dict[str, str]:
    """What the compose services get: LOG_JSON unset, so the default decides."""
    env = app_env(settings, LOG_LEVEL=level)
    del env["LOG_JSON"]
    return env


def request(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    sent = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(sent, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Recorded(Running):
    """A `Running` that knows when all of its output has been read."""

    def __init__(self, command: list[str], env: dict[str, str], name: str) -> None:
        self.drained = threading.Event()  # before the reader thread starts
        super().__init__(command, env, name)

    def _read(self) -> None:
        try:
            super()._read()
        finally:
            self.drained.set()

    def stop_and_drain(self) -> None:
        """Stop gracefully (uvicorn re-raises the signal, so no exit status to check) and wait
        for its last line; the bound only stops a broken test."""
        self.stop()
        assert self.drained.wait(timeout=30), self.output[-3000:]


def start_api(env: dict[str, str], processes: list[Running]) -> tuple[Recorded, int]:
    port = free_port()
    api = Recorded(compose_command("api", port), env, "api")
    processes.append(api)
    api.wait_for_line(lambda line: "Uvicorn running on" in line)
    return api, port


def records(process: Running, console: re.Pattern[str] | None = None) -> list[dict[str, Any]]:
    """Every output line of `process` but its `console` lines, each one JSON log record."""
    parsed = []
    for line in process.lines:
        try:
            record = json.loads(line)
        except ValueError:
            if console is not None and console.search(line):
                continue
            raise AssertionError(f"{process.name}: not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        assert {"event", "level", "timestamp"} <= record.keys(), line
        parsed.append(record)
    return parsed


def access_lines(process: Running, path: str) -> list[dict[str, Any]]:
    return [
        record
        for record in records(process)
        if record.get("logger") == "uvicorn.access" and record["path"] == path
    ]


def test_api_and_worker_write_only_json_lines(
    servers: Servers, database_url: str, processes: list[Running]
) -> None:
    env = container_env(make_settings(database_url, servers.redis_url), "INFO")
    worker = Recorded(compose_command("worker"), env, "worker")
    processes.append(worker)
    worker.wait_for_line(lambda line: '"worker started"' in line)
    api, port = start_api(env, processes)

    for _ in range(3):
        assert request(port, "/health")[0] == 200
    assert request(port, JOBS_PATH)[0] == 200
    # A failing job: SAQ logs its traceback with the standard library's logger.exception.
    status, accepted = request(port, "/api/v1/tasks/trigger-test", {"message": "x", "fail": True})
    assert status == 202
    worker.wait_for_line(lambda line: "job finished" in line and accepted["job_id"] in line)
    api.wait_for_line(lambda line: JOBS_PATH in line)
    api.stop_and_drain()
    worker.stop_and_drain()

    assert [(r["level"], r["method"], r["status"]) for r in access_lines(api, JOBS_PATH)] == [
        ("info", "GET", 200)
    ]
    assert access_lines(api, "/api/v1/tasks/trigger-test")[0]["status"] == 202
    assert access_lines(api, "/health") == []
    events = [r["event"] for r in records(api)]
    assert "Application startup complete." in events
    assert events[-1].startswith("Finished server process")
    logged = records(worker, console=WORKER_CONSOLE)
    failures = [r for r in logged if "TestTaskFailure" in r.get("exception", "")]
    assert [(r["logger"], r["level"]) for r in failures] == [("saq", "error")]
    assert any(r["event"] == "job finished" for r in logged)


def test_health_checks_are_logged_at_debug(
    servers: Servers, database_url: str, processes: list[Running]
) -> None:
    env = container_env(make_settings(database_url, servers.redis_url), "DEBUG")
    api, port = start_api(env, processes)
    for _ in range(3):
        assert request(port, "/health")[0] == 200
    assert request(port, JOBS_PATH)[0] == 200
    api.wait_for_line(lambda line: JOBS_PATH in line)
    api.stop_and_drain()

    assert [r["level"] for r in access_lines(api, "/health")] == ["debug"] * 3
    assert [r["level"] for r in access_lines(api, JOBS_PATH)] == ["info"]

"""`make dev`: the whole system on one machine, no Docker.

Uses DATABASE_URL / REDIS_URL when they point at reachable servers, otherwise starts
project-local PostgreSQL and Redis under .local/ (data kept for next time). Then migrates,
and runs the API (port API_PORT, default 8000) and one worker, their output prefixed and
also written to .local/logs/. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from local_servers import LocalPostgres, LocalRedis, ServerError, port_open

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
APP = "app.asgi:create_app"


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    return port_open(parts.port or default_port, parts.hostname or "127.0.0.1")


def pump(prefix: str, stream: object, log_path: Path) -> None:
    with log_path.open("a", encoding="utf-8") as log:
        for line in stream:  # type: ignore[attr-defined]
            log.write(line)
            log.flush()
            sys.stdout.write(f"{prefix} | {line}")
            sys.stdout.flush()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("LITESTAR_APP", APP)
    env.setdefault("LOG_JSON", "false")
    api_port = int(env.get("API_PORT", "8000"))
    started: list[LocalPostgres | LocalRedis] = []
    try:
        servers = (
            ("DATABASE_URL", 5432, "PostgreSQL",
             lambda: LocalPostgres(LOCAL / "postgres", int(env.get("DEV_PG_PORT", "55432")))),
            ("REDIS_URL", 6379, "Redis",
             lambda: LocalRedis(LOCAL / "redis", int(env.get("DEV_REDIS_PORT", "56379")))),
        )  # fmt: skip
        for variable, default_port, name, local_server in servers:
            if env.get(variable) and reachable(env[variable], default_port):
                print(f"dev: using {variable}={env[variable]}")
                continue
            if env.get(variable):
                print(f"dev: {variable} is not reachable; starting a local {name}")
            server = local_server()
            server.start()
            started.append(server)
            env[variable] = server.url
    except ServerError as exc:
        print(f"dev: {exc}", file=sys.stderr)
        _stop(started)
        return 1

    if port_open(api_port):
        print(f"dev: port {api_port} is taken; set API_PORT to another port", file=sys.stderr)
        _stop(started)
        return 1

    python_bin = Path(sys.executable).parent
    migrate = subprocess.run(
        [str(python_bin / "litestar"), "--app", APP, "database", "upgrade", "--no-prompt"],
        env=env,
        cwd=ROOT,
        check=False,
    )
    if migrate.returncode != 0:
        print("dev: migrations failed", file=sys.stderr)
        _stop(started)
        return 1

    logs = LOCAL / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "api": [str(python_bin / "uvicorn"), "--factory", APP, "--host", "127.0.0.1",
                "--port", str(api_port)],
        "worker": [str(python_bin / "litestar"), "--app", APP, "workers", "run"],
    }  # fmt: skip
    children: dict[str, subprocess.Popen[str]] = {}
    for name, command in commands.items():
        children[name] = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Same process group as make: Ctrl-C, or a kill of the group, reaches every child.
        )
        threading.Thread(
            target=pump, args=(name, children[name].stdout, logs / f"{name}.log"), daemon=True
        ).start()

    database = urlsplit(env["DATABASE_URL"])
    print(
        "\n".join(
            [
                "",
                f"dev: API        http://localhost:{api_port}  (OpenAPI at /schema)",
                f"dev: SAQ web UI http://localhost:{api_port}/saq",
                f"dev: logs       {logs}/api.log, {logs}/worker.log",
                f'dev: psql       psql "{database._replace(scheme="postgresql").geturl()}"',
                "dev: Ctrl-C stops everything this started",
                "",
            ]
        ),
        flush=True,
    )

    stopping = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping.wait(0.5):
        for name, child in children.items():
            if child.poll() is not None:
                print(f"dev: {name} exited with code {child.returncode}; stopping", flush=True)
                exit_code = 1
                stopping.set()
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    _stop(started)
    print("dev: stopped", flush=True)
    return exit_code


def _stop(started: list[LocalPostgres | LocalRedis]) -> None:
    for server in reversed(started):
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""`make dev`: the whole system on one machine, no Docker.

Uses DATABASE_URL / REDIS_URL when they point at reachable servers, otherwise starts
project-local PostgreSQL and Redis under .local/ (PostgreSQL's data kept for next time; Redis
keeps nothing on disk, and the reconciler enqueues again what it lost). Then migrates, and runs
the API (port API_PORT, default 8000) and the worker, their output prefixed and also written
to .local/logs/. API_PROCESSES and WORKER_PROCESSES (default 1) set how many processes each
runs: `uvicorn --workers N` on the one port, `litestar workers run --workers N` on the queue.
Every way out (Ctrl-C, SIGTERM, SIGHUP, a failed start) stops what it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from local_servers import LocalPostgres, LocalRedis, ServerError
from ports import port_open, port_taken, port_taken_message

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
APP = "app.asgi:create_app"
STOP_WITHIN = 30.0  # seconds the API and the worker get to stop before they are killed

Server = LocalPostgres | LocalRedis
PROCESS_COUNTS = ("API_PROCESSES", "WORKER_PROCESSES")


def process_count(env: dict[str, str], name: str) -> int:
    value = env.get(name) or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a whole number of processes, at least 1 (got {value!r})")
    return int(value)


def workers_option(processes: int) -> list[str]:
    """The `--workers N` both uvicorn and `litestar workers run` take; none for one process."""
    return ["--workers", str(processes)] if processes > 1 else []


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    return port_open(parts.port or default_port, parts.hostname or "127.0.0.1")


def pump(prefix: str, stream: IO[str], log_path: Path) -> None:
    with log_path.open("a", encoding="utf-8") as log:
        for line in stream:
            log.write(line)
            log.flush()
            sys.stdout.write(f"{prefix} | {line}")
            sys.stdout.flush()


def say(message: str, *, error: bool = False) -> None:
    print(f"dev: {message}", file=sys.stderr if error else sys.stdout, flush=True)


class DevRun:
    """One `make dev`: what it started, so that whichever way it ends, all of it is stopped."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.env.setdefault("LITESTAR_APP", APP)
        self.env.setdefault("LOG_JSON", "false")
        # Open mode on this machine (the README's curl needs no key); set it to false to try keys.
        self.env.setdefault("AUTH_DISABLED", "true")
        self.bin = Path(sys.executable).parent
        self.stopping = threading.Event()
        self.signal_name = ""
        self.servers: list[Server] = []
        self.children: dict[str, subprocess.Popen[str]] = {}
        self.pumps: list[threading.Thread] = []
        self.processes = dict.fromkeys(PROCESS_COUNTS, 1)

    def request_stop(self, signum: int, _frame: object) -> None:
        # No printing here: a handler that writes while the main thread writes raises.
        self.signal_name = self.signal_name or signal.Signals(signum).name
        self.stopping.set()

    def run(self) -> int:
        """Start everything, then wait for a stop; 0 when stopped on request, 1 on a failure."""
        api_port = int(self.env.get("API_PORT", "8000"))
        try:
            self.processes = {name: process_count(self.env, name) for name in PROCESS_COUNTS}
        except ValueError as exc:
            say(str(exc), error=True)
            return 1
        local = self._local_servers()
        taken = [(api_port, "the API", "API_PORT")] if port_taken(api_port) else []
        taken += [
            (server.port, name, server.port_variable)
            for name, server in local
            if port_taken(server.port)
        ]
        for port, what, variable in taken:
            say(port_taken_message(port, what, variable), error=True)
        if taken:
            return 1
        for name, server in local:
            self.servers.append(server)  # before start: a start cut short is stopped too
            try:
                server.start()
            except ServerError as exc:
                if self.stopping.is_set():
                    return 0
                say(str(exc), error=True)
                return 1
            if self.stopping.is_set():
                return 0
            say(f"{name} on 127.0.0.1:{server.port}")
        if not self._migrate():
            return 0 if self.stopping.is_set() else 1
        self._start_children(api_port)
        return self._wait()

    def _local_servers(self) -> list[tuple[str, Server]]:
        """The servers to start here; stops any an earlier run left (killed before cleaning up)."""
        wanted: list[tuple[str, Server]] = []
        pg_port = int(self.env.get("DEV_PG_PORT", "55432"))
        redis_port = int(self.env.get("DEV_REDIS_PORT", "56379"))
        for variable, default_port, name, make in (
            ("DATABASE_URL", 5432, "PostgreSQL",
             lambda: LocalPostgres(LOCAL / "postgres", pg_port, port_variable="DEV_PG_PORT")),
            ("REDIS_URL", 6379, "Redis",
             lambda: LocalRedis(LOCAL / "redis", redis_port, persistent=False,
                                port_variable="DEV_REDIS_PORT")),
        ):  # fmt: skip
            given = self.env.get(variable)
            if given and reachable(given, default_port):
                say(f"using {variable}={given}")
                continue
            if given:
                say(f"{variable} is not reachable; starting a local {name}")
            server: Server = make()
            if isinstance(server, LocalPostgres) and server.relocated:
                say(f"PostgreSQL data in {server.data_dir} (the postgres user cannot reach .local)")
            leftover = server.leftover_pid()
            if leftover is not None:
                say(f"stopping the {name} an earlier run left running (pid {leftover})")
                server.stop()
            self.env[variable] = server.url
            wanted.append((name, server))
        return wanted

    def _migrate(self) -> bool:
        say("migrating the database")
        command = [str(self.bin / "litestar"), "--app", APP, "database", "upgrade", "--no-prompt"]
        migration = subprocess.Popen(command, env=self.env, cwd=ROOT, text=True)
        self.children["migrations"] = migration
        while True:
            try:
                code = migration.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if self.stopping.is_set():
                    return False  # stop_all ends it
        del self.children["migrations"]
        if code != 0 and not self.stopping.is_set():
            say("migrations failed", error=True)
        return code == 0 and not self.stopping.is_set()

    def _start_children(self, api_port: int) -> None:
        logs = LOCAL / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        api_processes, worker_processes = (self.processes[name] for name in PROCESS_COUNTS)
        commands = {
            "api": [str(self.bin / "uvicorn"), "--factory", APP, "--host", "127.0.0.1",
                    "--port", str(api_port), *workers_option(api_processes)],
            "worker": [str(self.bin / "litestar"), "--app", APP, "workers", "run",
                       *workers_option(worker_processes)],
        }  # fmt: skip
        if api_processes > 1:
            # One secret for every API process, so a monitor login works in each.
            self.env.setdefault("SESSION_SECRET", secrets.token_urlsafe(48))
        for name, command in commands.items():
            # Same process group as make: Ctrl-C reaches every child, as it reaches us.
            child = subprocess.Popen(
                command,
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            self.children[name] = child
            assert child.stdout is not None
            pumping = threading.Thread(
                target=pump, args=(name, child.stdout, logs / f"{name}.log"), daemon=True
            )
            pumping.start()
            self.pumps.append(pumping)
        database = urlsplit(self.env["DATABASE_URL"])._replace(scheme="postgresql").geturl()
        print(
            f"\ndev: API        http://localhost:{api_port}  (OpenAPI at /schema), "
            f"{api_processes} process(es); worker: {worker_processes} process(es)\n"
            f"dev: SAQ web UI http://localhost:{api_port}/saq\n"
            f"dev: logs       {logs}/api.log, {logs}/worker.log\n"
            f'dev: psql       psql "{database}"\n'
            "dev: Ctrl-C stops everything this started\n",
            flush=True,
        )

    def _wait(self) -> int:
        while not self.stopping.wait(0.5):
            for name, child in self.children.items():
                if child.poll() is not None:
                    say(f"{name} exited with code {child.returncode}; stopping", error=True)
                    return 1
        return 0

    def stop_all(self) -> None:
        """Stop the children, then the servers: whatever got started, however far it got."""
        if self.signal_name:
            say(f"{self.signal_name}: stopping")
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(timeout=STOP_WITHIN)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for pumping in self.pumps:
            pumping.join(timeout=5)  # the children's last lines
        for server in reversed(self.servers):
            try:
                server.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                say(f"could not stop {server}: {exc}", error=True)


def main() -> int:
    dev = DevRun()
    # First thing: from here on a signal only asks to stop, and the `finally` does the stopping.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, dev.request_stop)
    try:
        return dev.run()
    finally:
        dev.stop_all()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())

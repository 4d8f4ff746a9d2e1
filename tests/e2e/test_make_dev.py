"""`make dev` from a copy of the project in a private folder (0700, a space in its path), on
its own local PostgreSQL and Redis: it serves the seed's curl, and every way out — Ctrl-C,
SIGTERM, a failed start, a stop in the middle of the start — leaves none of its processes.

As root the private folder is the point: the `postgres` user cannot enter it, so the local
PostgreSQL keeps its data in a folder of that user's under /var/tmp (and `make clean` deletes
it). The copy runs with the project's virtualenv, its own code first on PYTHONPATH; `make`
gets `UV=true RUN=` so that it neither syncs that shared virtualenv nor wraps `uv run`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from advanced_alchemy.extensions.litestar import AlembicAsyncConfig

from tests.support import ROOT, VENV_BIN, Running, processes_of
from tests.support.readme import run_readme_curl, run_readme_psql, wait_until_up

sys.path.insert(0, str(ROOT / "scripts"))
from local_servers import private_postgres_home
from ports import free_port, port_taken

STARTED = "Ctrl-C stops everything this started"
VERSIONS = AlembicAsyncConfig().version_table_name  # Alembic's table, as the app names it
MAKE_OVERRIDES = ["UV=true", "RUN="]  # no `uv sync` of the shared virtualenv, no `uv run`


@dataclass
class Dev:
    """One `make dev` of the copy: its ports, and the marker in its processes' environment."""

    project: Path
    api_port: int
    pg_port: int
    redis_port: int
    run: Running
    marker: str

    @property
    def database_url(self) -> str:
        return f"postgresql://user:password@127.0.0.1:{self.pg_port}/app_db"

    def survivors(self) -> list[str]:
        """This run's processes: by environment, by the copy's path, by PostgreSQL's folder."""
        postgres_home = str(private_postgres_home(self.project / ".local" / "postgres"))
        return processes_of(self.marker, str(self.project), postgres_home)

    def finish(self, within: float = 90.0) -> int:
        """Wait for make to end; then nothing of this run may be left, nor hold its ports."""
        code = self.run.process.wait(timeout=within)
        assert self.survivors() == [], self.run.output[-3000:]
        for port in (self.api_port, self.pg_port, self.redis_port):
            assert not port_taken(port), f"port {port} still taken"
        return code


def copy_project(target: Path) -> None:
    """The working tree as git sees it (uncommitted changes included), without .venv/.local."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout  # fmt: skip
    for name in filter(None, listing.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def postgres_can_enter(folder: Path) -> bool:
    probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(folder)]
    return subprocess.run(probe, cwd="/", check=False).returncode == 0


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    # mkdtemp makes the folder 0700, like /root or a clone in `mktemp -d`; left closed on purpose.
    base = Path(tempfile.mkdtemp(prefix="tracked jobs "))
    project = base / "my app"
    copy_project(project)
    if os.geteuid() == 0:
        assert not postgres_can_enter(project), "the folder must be out of postgres' reach"
    yield project
    subprocess.run(
        ["make", "clean", *MAKE_OVERRIDES], cwd=project, env=make_env(project), check=False
    )
    shutil.rmtree(base, ignore_errors=True)


def make_env(project: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "LOG_JSON", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    return {
        **env,
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(project / "src"),
        **extra,
    }


def start_dev(project: Path, **extra: str) -> Dev:
    marker = uuid.uuid4().hex
    settings = {
        "API_PORT": str(free_port()),
        "DEV_PG_PORT": str(free_port()),
        "DEV_REDIS_PORT": str(free_port()),
        "TRACKED_JOBS_E2E_RUN": marker,
        **extra,
    }
    env = make_env(project, **settings)
    running = Running(["make", "dev", *MAKE_OVERRIDES], env, "make dev", cwd=project)
    api, pg, redis = (int(settings[name]) for name in ("API_PORT", "DEV_PG_PORT", "DEV_REDIS_PORT"))
    return Dev(project, api, pg, redis, running, f"TRACKED_JOBS_E2E_RUN={marker}")


@pytest.fixture
def devs() -> Iterator[list[Dev]]:
    """The runs of one test; whatever a failing test left running is killed."""
    started: list[Dev] = []
    yield started
    for dev in started:
        dev.run.send(signal.SIGKILL)
        dev.run.process.wait()
        for line in dev.survivors():
            os.kill(int(line.split()[1]), signal.SIGKILL)


def job_status(port: int, job_id: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}") as answer:
        status: str = json.load(answer)["status"]
    return status


def test_seed_steps_then_ctrl_c_leaves_nothing_running(project: Path, devs: list[Dev]) -> None:
    dev = start_dev(project)
    devs.append(dev)
    wait_until_up(dev.api_port, dev.run)
    if os.geteuid() == 0:
        home = private_postgres_home(project / ".local" / "postgres")
        assert f"PostgreSQL data in {home / 'postgres'}" in dev.run.output
        assert (home.stat().st_mode & 0o777, home.owner()) == (0o700, "postgres")

    job_id = run_readme_curl(dev.api_port)["job_id"]
    deadline = time.monotonic() + 60
    while job_status(dev.api_port, job_id) != "complete":
        assert time.monotonic() < deadline, f"job {job_id}: {job_status(dev.api_port, job_id)}"
        time.sleep(0.1)
    row = run_readme_psql(dev.database_url)
    assert job_id in row
    assert "complete" in row

    running = "\n".join(dev.survivors())
    for process in ("scripts/dev.py", "uvicorn", "workers run", "redis-server", "postgres -D"):
        assert process in running, running
    dev.run.send(signal.SIGINT)  # Ctrl-C: the terminal signals the whole process group
    dev.finish()
    assert "dev: stopped" in dev.run.output


def test_sigterm_to_make_leaves_nothing_running(project: Path, devs: list[Dev]) -> None:
    dev = start_dev(project)
    devs.append(dev)
    wait_until_up(dev.api_port, dev.run)
    # Redis keeps nothing on disk: with its folder gone it still stops (a snapshot could not).
    redis_cli = ["redis-cli", "-p", str(dev.redis_port), "CONFIG", "GET"]
    config = subprocess.run([*redis_cli, "save"], check=True, capture_output=True, text=True)
    assert config.stdout.split("\n")[1] == ""
    config = subprocess.run([*redis_cli, "appendonly"], check=True, capture_output=True, text=True)
    assert config.stdout.split("\n")[1] == "no"
    shutil.rmtree(project / ".local" / "redis")
    os.kill(dev.run.process.pid, signal.SIGTERM)  # make alone, as `kill` or a supervisor does
    dev.finish()
    assert "dev: SIGTERM: stopping" in dev.run.output
    assert "dev: stopped" in dev.run.output


def trigger(port: int, sleep_seconds: float) -> str:
    body = json.dumps({"message": "processes", "sleep_seconds": sleep_seconds}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/tasks/trigger-test",
        data=body, headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        job_id: str = json.load(answer)["job_id"]
    return job_id


def test_api_and_worker_processes_serve_then_ctrl_c_leaves_nothing_running(
    project: Path, devs: list[Dev]
) -> None:
    """Catches: API_PROCESSES or WORKER_PROCESSES ignored (one uvicorn process starts, one
    worker takes every job), or the processes they fork outliving the run."""
    dev = start_dev(project, API_PROCESSES="2", WORKER_PROCESSES="2")
    devs.append(dev)
    wait_until_up(dev.api_port, dev.run)
    deadline = time.monotonic() + 60  # the other API process may still be starting
    while sum("Application startup complete" in line for line in dev.run.lines) < 2:
        assert time.monotonic() < deadline, dev.run.output[-3000:]
        time.sleep(0.1)
    # Twice one worker's concurrency, each job long enough that one worker cannot take them all.
    jobs = [trigger(dev.api_port, sleep_seconds=1) for _ in range(40)]
    ours = f"FROM background_jobs WHERE job_id::text IN ({', '.join(repr(j) for j in jobs)})"
    deadline = time.monotonic() + 120
    while int(run_psql(dev.database_url, f"SELECT count(*) {ours} AND status = 'complete'")) < 40:
        assert time.monotonic() < deadline, run_psql(dev.database_url, f"SELECT status {ours}")
        time.sleep(0.2)
    assert run_psql(dev.database_url, f"SELECT count(DISTINCT worker_id) {ours}") == "2"
    dev.run.send(signal.SIGINT)
    dev.finish()
    assert "dev: stopped" in dev.run.output


def test_a_process_count_below_one_is_refused(project: Path, devs: list[Dev]) -> None:
    dev = start_dev(project, WORKER_PROCESSES="0")
    devs.append(dev)
    assert dev.finish() != 0
    assert "WORKER_PROCESSES must be a whole number of processes, at least 1" in dev.run.output
    assert STARTED not in dev.run.output


def test_the_servers_a_killed_run_left_are_stopped_by_the_next(
    project: Path, devs: list[Dev]
) -> None:
    killed = start_dev(project)
    devs.append(killed)
    killed.run.wait_for_line(lambda line: line == "dev: migrating the database", within=180)
    killed.run.send(signal.SIGKILL)  # make, dev.py, the migration; not the servers' sessions
    killed.run.process.wait()
    left = "\n".join(killed.survivors())
    assert "redis-server" in left
    assert "postgres -D" in left
    ports = {"DEV_PG_PORT": str(killed.pg_port), "DEV_REDIS_PORT": str(killed.redis_port)}
    dev = start_dev(project, **ports)  # the same ports: no "port is taken"
    devs.append(dev)
    dev.run.wait_for_line(lambda line: line == "dev: migrating the database", within=180)
    assert "dev: stopping the PostgreSQL an earlier run left running" in dev.run.output
    assert "dev: stopping the Redis an earlier run left running" in dev.run.output
    dev.run.send(signal.SIGINT)
    dev.finish()


@pytest.mark.parametrize("variable", ["API_PORT", "DEV_PG_PORT", "DEV_REDIS_PORT"])
def test_a_taken_port_is_named_with_its_holder_and_variable(
    project: Path, devs: list[Dev], variable: str
) -> None:
    with socket.socket() as holder:
        port = free_port()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        dev = start_dev(project, **{variable: str(port)})
        devs.append(dev)
        dev.run.process.wait(timeout=60)
    assert dev.finish() != 0
    message = next(line for line in dev.run.lines if f"port {port} " in line)
    assert f"is taken by pid {os.getpid()} " in message
    assert f"set {variable} to a free port" in message
    assert STARTED not in dev.run.output


def test_a_start_failing_after_the_servers_started_stops_them(
    project: Path, devs: list[Dev]
) -> None:
    dev = start_dev(project, DB_POOL_SIZE="not-a-number")  # the migration cannot load the app
    devs.append(dev)
    assert dev.finish() != 0
    assert f"dev: PostgreSQL on 127.0.0.1:{dev.pg_port}" in dev.run.output
    assert f"dev: Redis on 127.0.0.1:{dev.redis_port}" in dev.run.output
    assert "dev: migrations failed" in dev.run.output
    assert STARTED not in dev.run.output


@pytest.mark.parametrize(
    "stop", ["ctrl-c to the process group", "SIGTERM to make"], ids=["sigint", "sigterm"]
)
def test_a_stop_in_the_middle_of_the_start_stops_what_had_started(
    project: Path, devs: list[Dev], stop: str
) -> None:
    dev = start_dev(project)
    devs.append(dev)
    dev.run.wait_for_line(lambda line: line.startswith("dev: PostgreSQL on"), within=180)
    # Hold the migration up on a lock (taken while dev.py starts Redis and the migration CLI
    # loads), so that the stop lands with the servers up and the migration running.
    locker = subprocess.Popen(
        ["psql", dev.database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert locker.stdin is not None
    locker.stdin.write(
        "BEGIN;\n"
        f"CREATE TABLE IF NOT EXISTS {VERSIONS} (version_num varchar(32) PRIMARY KEY);\n"
        f"LOCK TABLE {VERSIONS} IN ACCESS EXCLUSIVE MODE;\n"
    )
    locker.stdin.flush()
    try:
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
        deadline = time.monotonic() + 60
        while run_psql(dev.database_url, waiting) == "0":
            assert time.monotonic() < deadline, f"no wait on the lock:\n{dev.run.output[-3000:]}"
            assert locker.poll() is None, "psql could not take the lock"
            time.sleep(0.1)
        assert "dev: migrating the database" in dev.run.output
        if stop == "SIGTERM to make":
            os.kill(dev.run.process.pid, signal.SIGTERM)
        else:
            dev.run.send(signal.SIGINT)
        dev.finish()
    finally:
        locker.kill()
        locker.wait()
    assert "dev: stopped" in dev.run.output
    assert STARTED not in dev.run.output


def run_psql(url: str, sql: str) -> str:
    command = ["psql", url, "-X", "-q", "-tA", "-c", sql]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_make_clean_stops_and_deletes_the_local_servers(project: Path) -> None:
    pg_port, redis_port = free_port(), free_port()
    up = ["python", "scripts/local_servers.py", "up", "--pg-port", str(pg_port)]
    subprocess.run(
        [*up, "--redis-port", str(redis_port)], cwd=project, env=make_env(project), check=True
    )
    home = private_postgres_home(project / ".local" / "postgres")
    data = home / "postgres" if os.geteuid() == 0 else project / ".local" / "postgres"
    assert (data / "PG_VERSION").exists()
    assert port_taken(pg_port)
    assert port_taken(redis_port)
    subprocess.run(
        ["make", "clean", *MAKE_OVERRIDES], cwd=project, env=make_env(project), check=True
    )
    assert not port_taken(pg_port)
    assert not port_taken(redis_port)
    assert not (project / ".local").exists()
    assert not home.exists()

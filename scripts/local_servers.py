"""Project-local PostgreSQL and Redis servers for `make dev`, `make test` and `make bench`.

Starts the installed server binaries on loopback, in a folder of ours, with no Docker.
PostgreSQL refuses to run as root, so as root its commands run as the `postgres` user; when
that user cannot reach the folder asked for (a clone in a 0700 folder such as /root/app), the
data lives in a private folder of that user's under /var/tmp, named after the folder asked for.

    python scripts/local_servers.py up    [--dir .local] [--pg-port 55432] [--redis-port 56379]
    python scripts/local_servers.py down  [--dir .local]
    python scripts/local_servers.py clean [--dir .local]   # down, then delete the data
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ports import (
    free_port,
    port_open,
    port_taken,
    port_taken_message,
    server_pid,
    wait_gone,
)

__all__ = ["LocalPostgres", "LocalRedis", "ServerError", "free_port", "port_open", "port_taken"]

PG_USER = "user"
PG_PASSWORD = "password"  # noqa: S105 - a throwaway local server on loopback
PG_DATABASE = "app_db"
POSTGRES_ACCOUNT = "postgres"
STOP_WITHIN = 30.0  # seconds a server gets to stop before it is killed


class ServerError(RuntimeError):
    pass


def postgres_bin(name: str) -> str:
    """Find a PostgreSQL server binary: on PATH, else in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise ServerError(
        f"PostgreSQL binary {name!r} not found: install it (Debian: apt-get install postgresql)"
    )


def redis_bin() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    raise ServerError("redis-server not found: install it (Debian: apt-get install redis-server)")


def _as_root() -> bool:
    return os.geteuid() == 0


def _as_postgres_user(command: list[str]) -> list[str]:
    if not _as_root():
        return command
    return ["runuser", "-u", POSTGRES_ACCOUNT, "--", *command]


def _chown_to_postgres(path: Path) -> None:
    if _as_root():
        shutil.chown(path, user=POSTGRES_ACCOUNT, group=POSTGRES_ACCOUNT)


def _postgres_can_enter(folder: Path) -> bool:
    probe = subprocess.run(
        _as_postgres_user(["test", "-x", str(folder)]), cwd="/", capture_output=True, check=False
    )
    return probe.returncode == 0


def private_postgres_home(requested: Path) -> Path:
    """The folder under /var/tmp that holds `requested`'s data when `postgres` cannot reach it."""
    digest = hashlib.sha256(str(requested).encode()).hexdigest()[:16]
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path(tempfile.gettempdir())  # noqa: S108
    return base / f"tracked-jobs-postgres-{digest}"


def _make_private_home(home: Path, requested: Path) -> None:
    with contextlib.suppress(FileExistsError):
        home.mkdir(mode=0o700)
    info = home.lstat()
    owners = {0, pwd.getpwnam(POSTGRES_ACCOUNT).pw_uid}
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
        raise ServerError(f"{home} exists and is not a folder of root or postgres: remove it")
    home.chmod(0o700)
    (home / "ORIGIN").write_text(f"PostgreSQL data of {requested}; `make clean` there deletes it\n")
    _chown_to_postgres(home)


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    port_variable: str = "--pg-port"  # what a person sets to choose another port
    # False: fsync, synchronous_commit and full_page_writes off (dev and tests, throwaway data);
    # True: PostgreSQL's own durable defaults, what users run (the benchmark's headline).
    durable: bool = False
    requested_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.requested_dir = self.data_dir = self.data_dir.resolve()
        if _as_root():
            home = private_postgres_home(self.requested_dir)
            self.requested_dir.parent.mkdir(parents=True, exist_ok=True)
            if home.exists() or not _postgres_can_enter(self.requested_dir.parent):
                self.data_dir = home / self.requested_dir.name

    @property
    def relocated(self) -> bool:
        return self.data_dir != self.requested_dir

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        # From "/": the postgres user may not be able to enter our working folder.
        return subprocess.run(
            _as_postgres_user(command), check=True, capture_output=True, text=True, cwd="/"
        )

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if self.relocated:
            _make_private_home(self.data_dir.parent, self.requested_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        _chown_to_postgres(pwfile)
        try:
            self._run(
                [postgres_bin("initdb"), "-D", str(self.data_dir), "-U", PG_USER,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"]
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise ServerError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# project-local server: loopback only, no unix socket\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 600\n"
            )
            if not self.durable:
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    def start(self) -> None:
        self.init()
        if port_taken(self.port):
            raise ServerError(port_taken_message(self.port, "PostgreSQL", self.port_variable))
        log = self.data_dir / "server.log"
        try:
            self._run(
                [postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(log),
                 "-o", f"-p {self.port}", "-w", "-t", "60", "start"]
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ServerError(f"PostgreSQL did not start: {exc.stdout}{exc.stderr}{tail}") from exc
        self._ensure_database()

    def _ensure_database(self) -> None:
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
        check = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", "postgres",
             "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"],  # noqa: S608
            check=True, capture_output=True, text=True, env=env,
        )  # fmt: skip
        if check.stdout.strip() != "1":
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", "postgres",
                 "-c", f"CREATE DATABASE {PG_DATABASE}"],
                check=True, capture_output=True, text=True, env=env,
            )  # fmt: skip

    def leftover_pid(self) -> int | None:
        """The postmaster an earlier run on this data left running (killed before it stopped it)."""
        return server_pid(self.data_dir / "postmaster.pid", self.data_dir)

    def stop(self, mode: str = "fast") -> None:
        pid = self.leftover_pid()
        if pid is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                [postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
                 "-t", str(int(STOP_WITHIN)), "stop"]
            )  # fmt: skip
        if not wait_gone(pid, 1.0):
            os.kill(pid, signal.SIGKILL)  # pg_ctl gave up: no server of ours outlives a stop

    def delete(self) -> None:
        """Stop, then delete the data (and the private folder under /var/tmp, if any)."""
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir.parent if self.relocated else self.data_dir, ignore_errors=True)


@dataclass
class LocalRedis:
    data_dir: Path
    port: int
    persistent: bool = True  # AOF + snapshots; False: nothing on disk, a restart loses every job
    port_variable: str = "--redis-port"  # what a person sets to choose another port
    options: tuple[str, ...] = ()  # more of redis-server's arguments (tests: rename-command ...)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_taken(self.port):
            raise ServerError(port_taken_message(self.port, "Redis", self.port_variable))
        self.process = subprocess.Popen(
            [
                redis_bin(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--pidfile", str(self.pidfile),
                "--logfile", str(self.data_dir / "redis.log"),
                *(["--save", "60 1", "--appendonly", "yes"] if self.persistent
                  else ["--save", "", "--appendonly", "no"]),
                "--daemonize", "no",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)

    def leftover_pid(self) -> int | None:
        """The redis-server an earlier run in this folder left running."""
        return server_pid(self.pidfile, self.data_dir)

    def stop(self) -> None:
        # A Redis that cannot write its snapshot (its folder deleted) refuses SIGTERM: then kill.
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_WITHIN)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            return
        pid = self.leftover_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, STOP_WITHIN):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, STOP_WITHIN)

    def delete(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "clean"])
    parser.add_argument("--dir", default=".local", type=Path)
    parser.add_argument("--pg-port", default=55432, type=int)
    parser.add_argument("--redis-port", default=56379, type=int)
    args = parser.parse_args(argv)
    base: Path = args.dir.resolve()
    postgres = LocalPostgres(base / "postgres", args.pg_port)
    redis = LocalRedis(base / "redis", args.redis_port)
    try:
        if args.command == "up":
            postgres.stop()  # what an earlier run left behind, if anything
            redis.stop()
            postgres.start()
            redis.start()
            print(f"DATABASE_URL={postgres.url}")
            print(f"REDIS_URL={redis.url}")
        elif args.command == "down":
            redis.stop()
            postgres.stop()
        else:
            redis.delete()
            postgres.delete()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Project-local PostgreSQL and Redis servers for `make dev`, `make test` and `make bench`.

Starts the installed server binaries on loopback, in a folder of ours, with no Docker.
PostgreSQL refuses to run as root, so as root its commands run as the `postgres` user.

    python scripts/local_servers.py up   [--dir .local] [--pg-port 55432] [--redis-port 56379]
    python scripts/local_servers.py down [--dir .local]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PG_USER = "user"
PG_PASSWORD = "password"  # noqa: S105 - a throwaway local server on loopback
PG_DATABASE = "app_db"


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


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


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user="postgres", group="postgres")


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _run(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            _as_postgres_user(command), check=True, capture_output=True, text=True, **kwargs
        )

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        _chown_to_postgres(pwfile)
        try:
            self._run(
                [
                    postgres_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise ServerError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# project-local server: loopback only, no unix socket, fast and throwaway\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )

    def start(self) -> None:
        self.init()
        if port_open(self.port):
            raise ServerError(f"port {self.port} is taken: choose another PostgreSQL port")
        log = self.data_dir / "server.log"
        try:
            self._run(
                [
                    postgres_bin("pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(log),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
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

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])


@dataclass
class LocalRedis:
    data_dir: Path
    port: int
    persistent: bool = True  # AOF + snapshots; False: a restart loses every job (chaos tests)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_open(self.port):
            raise ServerError(f"port {self.port} is taken: choose another Redis port")
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

    def stop(self) -> None:
        pid = self.process.pid if self.process else _read_pid(self.pidfile)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
        if self.process is not None:
            self.process.wait(timeout=30)
        else:
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", default=".local", type=Path)
    parser.add_argument("--pg-port", default=55432, type=int)
    parser.add_argument("--redis-port", default=56379, type=int)
    args = parser.parse_args(argv)
    base: Path = args.dir.resolve()
    postgres = LocalPostgres(base / "postgres", args.pg_port)
    redis = LocalRedis(base / "redis", args.redis_port)
    try:
        if args.command == "up":
            postgres.start()
            redis.start()
            print(f"DATABASE_URL={postgres.url}")
            print(f"REDIS_URL={redis.url}")
        else:
            redis.stop()
            postgres.stop()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real processes started from a command line, their output kept; the API and a worker as
the README starts them; finding what survived."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from saq.worker import Worker

from tests.support.servers import APP, ROOT, VENV_BIN, free_port

# The `start_worker` fixture of tests/integration: a tracked SAQ worker in the test's loop.
StartWorker = Callable[..., Awaitable[Worker[Any]]]


class Running:
    """A process group started from a command line, with its output kept line by line."""

    def __init__(
        self, command: list[str], env: dict[str, str], name: str, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, count: int = 30) -> str:
        """The last lines of output, headed by the process's name (for failure messages)."""
        return f"--- {self.name} (last {count} lines) ---\n" + "\n".join(self.lines[-count:])

    def wait_for_line(self, matches: Callable[[str], bool], within: float = 60.0) -> str:
        """The first output line that `matches`; the bound only stops a broken test."""
        deadline = time.monotonic() + within
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if matches(line):
                        return line
                seen = len(self.lines)
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited early:\n{self.output[-5000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name}: no such line:\n{self.output[-5000:]}")
                self._changed.wait(timeout=0.2)

    def send(self, signum: int) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, within: float = 60.0) -> int:
        self.send(signum)
        try:
            return self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.process.wait()
            raise

    def kill(self) -> None:
        """SIGKILL to the whole group, and wait for it (a no-op once it has exited)."""
        if self.process.poll() is None:
            self.send(signal.SIGKILL)
            self.process.wait()


def wait_until_serving(origin: str, api: Running) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{origin}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline or api.process.poll() is not None:
                raise AssertionError(f"api did not start:\n{api.output[-3000:]}") from None
        time.sleep(0.2)


@contextlib.contextmanager
def app_and_worker(env: dict[str, str], app: str = APP) -> Iterator[str]:
    """The API on a free port and one worker of `app`, both started with `env`; yields the
    API's origin in the README's form (http://localhost:<port>) once both serve."""
    port = free_port()
    origin = f"http://localhost:{port}"
    worker = Running([str(VENV_BIN / "litestar"), "--app", app, "workers", "run"], env, "worker")
    api = Running(
        [str(VENV_BIN / "uvicorn"), "--factory", app, "--host", "127.0.0.1", "--port", str(port)],
        env,
        "api",
    )
    try:
        worker.wait_for_line(lambda line: '"worker started"' in line)
        # Its own line first: another test's server may answer on a port this one lost.
        api.wait_for_line(lambda line: "Uvicorn running on" in line)
        wait_until_serving(origin, api)
        yield origin
    finally:
        for process in (api, worker):
            process.stop()


def processes_of(*markers: str) -> list[str]:
    """Live processes whose command line, working folder or environment holds a marker.

    Read from /proc, which shows us every process we started (callers check that the probe
    sees the running ones first): `pgrep -f` sees neither folders nor environments, and takes
    a pattern that starts with `--` for an option.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, waiting for its parent to collect it
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone while we looked
        except PermissionError:
            continue  # not ours to read (another user's, or outside our namespace)
        for marker in markers:
            if marker in command or marker in cwd or marker in environ:
                found.append(f"pid {entry.name} in {cwd}: {command}")
                break
    return found

"""Real processes, started with the commands the README gives, their output captured."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support import ROOT, Servers, create_database, drop_database


class Running:
    """A process group started from a command line, with its output kept line by line."""

    def __init__(self, command: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
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


@pytest.fixture
def fresh_database_url(servers: Servers) -> Iterator[str]:
    """An empty database (not migrated): what a new user's server holds."""
    name = create_database(servers)
    yield servers.database_url(name)
    drop_database(servers, name)


@pytest.fixture
def processes() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        if running.process.poll() is None:
            running.send(signal.SIGKILL)
            running.process.wait()

"""Real processes, started with the commands the README gives, their output captured.

The helpers (`Running`, `processes_of`) live in tests/support; this file only holds fixtures.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.support import Running, Servers, create_database, drop_database


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

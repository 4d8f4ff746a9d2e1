"""Fixtures: a Redis server for each side of the differential runs, and the runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.config import Settings
from tests.differential.harness import Differ
from tests.support import LocalRedis, free_port


@pytest.fixture(scope="session")
def side_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """SAQ's side and the project's, each on a Redis server of its own (emptied per run)."""
    servers = [
        LocalRedis(tmp_path_factory.mktemp(f"differential-{side}"), free_port(), persistent=False)
        for side in ("saq", "tracked")
    ]
    for server in servers:
        server.start()
    try:
        yield servers[0].url, servers[1].url
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def differ(settings: Settings, side_servers: tuple[str, str]) -> Differ:
    return Differ(settings, *side_servers)

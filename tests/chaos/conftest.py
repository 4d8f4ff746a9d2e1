"""The chaos suite's fixture (a whole cluster per scenario) and the table it prints at the end.

The cluster and its helpers live in tests/support/cluster.py. The printed table is the one
docs/reliability.md shows, headed by the date, the commit and the run's test counts.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.cluster import COUNTS, RESULTS, Cluster, start_cluster

_STARTED = time.monotonic()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with start_cluster() as running:
        yield running


def _commit() -> str:
    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} with uncommitted changes" if git("status", "--porcelain") else commit


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    passed = len(terminalreporter.stats.get("passed", []))
    failed = len(terminalreporter.stats.get("failed", []))
    columns = ["scenario", *COUNTS, "recovered by", "seen", "within"]
    terminalreporter.write_sep("-", "chaos: what became of every job")
    terminalreporter.write_line(
        f"{datetime.now(UTC):%Y-%m-%d}, commit {_commit()}: {passed} passed, {failed} failed "
        f"in {time.monotonic() - _STARTED:.0f} s; {len(RESULTS)} chaos scenarios"
    )
    terminalreporter.write_line("")
    terminalreporter.write_line("| " + " | ".join(columns) + " |")
    terminalreporter.write_line("|" + "---|" * len(columns))
    for result in RESULTS:
        cells = [*(str(result[c]) for c in columns[:-1]), f"{result['within']:g} s"]
        terminalreporter.write_line("| " + " | ".join(cells) + " |")

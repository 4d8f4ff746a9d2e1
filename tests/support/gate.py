"""A gate the chaos tasks wait at just before they end, so that a scenario can break something
between a task's end and its worker's next move (its finish, or its retry).

A folder, not Redis: the scenarios stop and restart Redis while tasks wait. A task that
reaches the gate leaves `<key>.<attempt>` there (so the folder also counts each job's runs)
and waits until the test opens the gate.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.support.rows import eventually

_OPEN = "open"


async def wait_at_gate(folder: str, job: Any) -> None:
    """In the task: say this run is about to end, and wait for the test's go."""
    _arrive(Path(folder, f"{job.key}.{job.attempts}"))
    while True:
        if _is_open(Path(folder)):
            return
        await asyncio.sleep(0.02)


def _arrive(mark: Path) -> None:
    mark.touch()


def _is_open(folder: Path) -> bool:
    return (folder / _OPEN).exists()


class Gate:
    """The test's side of a gate folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder

    @property
    def path(self) -> str:
        return str(self.folder)

    def runs(self) -> dict[str, list[int]]:
        """Each job's key -> the attempts that reached the gate."""
        found: dict[str, list[int]] = defaultdict(list)
        for entry in self.folder.iterdir():
            if entry.name != _OPEN:
                key, attempt = entry.name.rsplit(".", 1)
                found[key].append(int(attempt))
        return {key: sorted(attempts) for key, attempts in found.items()}

    async def reached_by(self, count: int) -> None:
        async def enough() -> bool:
            return sum(len(attempts) for attempts in self.runs().values()) >= count

        await eventually(enough, within=60, what=f"{count} runs at the gate")

    def open(self) -> None:
        (self.folder / _OPEN).touch()

"""Stand-ins that let the unit layer run the real code without any I/O.

`InMemoryConnection` takes the place of the held connection (`app.db.connection.Connection`)
the way Procrastinate's `InMemoryConnector` does: it records every statement with its
parameters and answers with rows the test programmed. `FakeTime` replaces the recorder's
clock and sleep, so its cadence is followed step by step instead of timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Executable

Answer = Callable[[str, dict[str, Any]], Sequence[Any]]


def every_job_took_effect(statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What PostgreSQL answers when every row of the batch was written: their job ids."""
    return [(job_id,) for job_id in parameters.get("job_ids", [])]


@dataclass
class Executed:
    statement: str
    parameters: dict[str, Any]


@dataclass
class InMemoryConnection:
    answer: Answer = every_job_took_effect
    failures: list[BaseException] = field(default_factory=list)  # raised first, in order
    executed: list[Executed] = field(default_factory=list)
    closed: int = 0

    async def execute(self, statement: Executable, parameters: Mapping[str, Any]) -> Sequence[Any]:
        self.executed.append(Executed(str(statement), dict(parameters)))
        if self.failures:
            raise self.failures.pop(0)
        return self.answer(str(statement), dict(parameters))

    async def close(self) -> None:
        self.closed += 1

    def statements_like(self, words: str) -> list[Executed]:
        return [e for e in self.executed if words in e.statement]


@dataclass
class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let the other tasks run, as a real sleep would

    @property
    def waits(self) -> list[float]:
        """The sleeps that waited for something (a sleep of 0 only yields)."""
        return [round(s, 6) for s in self.sleeps if s > 0]


@dataclass
class FakeQueue:
    """The queue methods the outbox calls, answered from memory."""

    name: str = "unit"
    jobs: list[Any] = field(default_factory=list)
    pipelines: list[int] = field(default_factory=list)
    down: BaseException | None = None
    events: list[str] | None = None  # shared with a connection's answer, to see the order

    async def enqueue_many(self, jobs: Sequence[Any]) -> list[bool]:
        if self.down is not None:
            raise self.down
        if self.events is not None:
            self.events.append(f"enqueue {len(jobs)}")
        self.pipelines.append(len(jobs))
        self.jobs.extend(jobs)
        return [True] * len(jobs)

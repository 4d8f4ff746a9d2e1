"""How many cores other processes took while a run of ours went on: this machine is shared.

Sampled while the run goes on (before it, an idle moment says little: the others take what
we leave). Each interval: the machine's busy time less our processes' CPU (this harness,
PostgreSQL, Redis, the workers) is the others'. Only intervals with the same worker
processes running at both ends count, so start-up and shutdown stay out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from types import TracebackType

from bench.common import Bench, children_of, cpu_seconds

Sample = tuple[float, float, dict[int, float], frozenset[int]]


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def our_processes(bench: Bench) -> tuple[list[int], frozenset[int]]:
    """(every process of ours, the workers among them)."""
    workers = frozenset(c.pid for c in bench.children if "worker" in c.name)
    pids = [os.getpid(), *(c.pid for c in bench.children)]
    if bench.postgres is not None:
        postmaster_pid = bench.postgres.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int(postmaster_pid.read_text().split()[0])
            pids += [postmaster, *children_of(postmaster)]
    if bench.redis_server is not None and bench.redis_server.process is not None:
        pids.append(bench.redis_server.process.pid)
    return pids, workers


def other_cores(samples: list[Sample]) -> float | None:
    """Mean cores the others were busy over the intervals with the same workers at both ends."""
    spans = []
    for (t0, busy0, ours0, workers0), (t1, busy1, ours1, workers1) in pairwise(samples):
        if not workers0 or workers0 != workers1 or t1 <= t0:
            continue
        ours = sum(used - ours0[pid] for pid, used in ours1.items() if pid in ours0)
        spans.append((t1 - t0, busy1 - busy0 - ours))
    total = sum(seconds for seconds, _ in spans)
    return max(sum(cpu for _, cpu in spans) / total, 0.0) if total else None


class OtherLoad:
    """`async with OtherLoad(bench) as load: ...`, then `load.cores()`."""

    def __init__(self, bench: Bench, every: float = 0.5) -> None:
        self.processes: Callable[[], tuple[list[int], frozenset[int]]] = lambda: our_processes(
            bench
        )
        self.every = every
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> Sample:
        pids, workers = self.processes()
        used = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                used[pid] = sum(cpu_seconds(pid))
        return time.monotonic(), busy_seconds(), used, workers

    async def _run(self) -> None:
        while True:
            self.samples.append(self._sample())
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> OtherLoad:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def cores(self) -> float | None:
        return other_cores(self.samples)

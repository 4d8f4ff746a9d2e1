"""BENCH_PROFILE=1: py-spy on one extra run of a scenario, summarised where the CPU time goes.

    BENCH_PROFILE=1 uv run --with py-spy python -m bench

The profiled run is never one of the measured pairs (sampling slows the process down).
The summary lands in bench/results/profile-<name>.txt: the functions that used the most CPU
on their own ("self") and the ones whose calls took the most ("inclusive").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import ROOT

if TYPE_CHECKING:
    from bench.common import Bench

RESULTS = ROOT / "bench" / "results"
_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    """'handle (litestar/routes/http.py:123)' -> 'handle (litestar/routes/http.py)'."""
    raw = _LINE.sub(")", raw)
    return raw.replace(str(ROOT) + "/", "").replace(".venv/lib/python3.11/site-packages/", "")


def summarize(raw_file: Path, title: str, top: int = 30) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first one is the thread
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"# {title}", f"# {total} samples of on-CPU Python stacks (py-spy, idle excluded)"]
    for label, counter in (("self", self_time), ("inclusive", inclusive)):
        lines.append(f"\n## top {top} by {label} time")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(total, 1):6.1f}%  {frame}")
    return "\n".join(lines) + "\n"


class Profiler:
    """py-spy attached to one child for the length of one run."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.name = name
        self.raw = bench.workdir / f"profile-{name}.raw"
        self.summary_path = str((RESULTS / f"profile-{name}.txt").relative_to(ROOT))
        self._process: asyncio.subprocess.Process | None = None
        found = shutil.which("py-spy")
        if found is None:
            raise RuntimeError("BENCH_PROFILE needs py-spy: uv run --with py-spy python -m bench")
        self._py_spy = found

    async def attach(self, pid: int) -> None:
        self._process = await asyncio.create_subprocess_exec(
            self._py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
            "--output", str(self.raw), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # py-spy gives no "attached" signal; let it get going

    async def finish(self) -> None:
        """py-spy writes its file when the target exits or when it is interrupted."""
        if self._process is None:
            return
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self._process.wait(), 60)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self.raw.exists():
            RESULTS.mkdir(parents=True, exist_ok=True)
            (ROOT / self.summary_path).write_text(summarize(self.raw, self.name))

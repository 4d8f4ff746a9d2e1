"""BENCH_PROFILE=1: py-spy on one extra run of a scenario, summarised where the CPU time goes.

    BENCH_PROFILE=1 uv run --with py-spy python -m bench

The profiled run is never one of the measured pairs (sampling slows the process down).
The summary lands in bench/results/profile-<name>.txt: the functions that used the most CPU
on their own ("self") and the ones whose calls took the most ("inclusive"). SQLAlchemy runs
part of each query in a greenlet, whose stacks start at their own root ("entered at
Session.execute"), so an inclusive share under a caller leaves those samples out.
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


# Where a sample's time goes, by the first rule any frame of its stack matches.
PARTS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "drain-tracked-worker": [
        ("recorder: the batched UPDATE (held connection, SQLAlchemy, asyncpg)",
         ("write_transitions", "apply_transitions", "apply_progress", "HeldConnection",
          "sqlalchemy", "asyncpg")),
        ("recorder: job started/finished log lines", ("_log_transitions", "log_lines")),
        ("job events for the API's streams", ("EventPublisher", "JobEvent")),
        ("recorder: its loop", ("LifecycleRecorder._run",)),
        ("TrackedQueue: building and handing over each Transition",
         ("Transition.of", "TrackedQueue._report", "LifecycleRecorder.record")),
        ("worker hooks", ("before_process", "after_process", "_inject_heartbeat")),
        ("TrackedQueue: Redis moves (take script, pipelined marks and finishes)",
         ("job_moves", "redis_batch")),
        ("SAQ: Worker.process, job (de)serialization, other Redis calls",
         ("Worker.process", "redis/", "saq/")),
    ],
    "trigger-api": [
        ("Redis enqueue (one pipeline per group)", ("Enqueuer.enqueue_recorded", "enqueue_many")),
        ("row insert (one INSERT per group: Batcher, SQLAlchemy, asyncpg)",
         ("insert_rows", "HeldConnection", "Batcher", "sqlalchemy", "asyncpg")),
        ("rest of the handler", ("Enqueuer.enqueue", "TaskController.trigger_test")),
        ("logging (uvicorn's access line)", ("logging/__init__", "structlog")),
        ("HTTP: uvicorn, Litestar (parse, DI, response)", ("litestar/", "uvicorn/")),
    ],
    "query-list-api": [
        ("SQL: SQLAlchemy execute and session, asyncpg",
         ("Session.", "Transaction", "asyncpg", "_async_ping", "compile")),
        ("ORM row loading", ("loading.py", "InstanceState", "instrumentation")),
        ("the items: JobRead.from_columns, JSON encoding",
         ("JobRead.from_columns", "JobRead.from_row", "encode_json", "msgspec")),
        ("logging (uvicorn's access line)", ("logging/__init__",)),
        ("HTTP: uvicorn, Litestar (parse, DI, response)", ("litestar/", "uvicorn/")),
    ],
}  # fmt: skip


def _frame(raw: str) -> str:
    """'handle (litestar/routes/http.py:123)' -> 'handle (litestar/routes/http.py)'."""
    raw = _LINE.sub(")", raw)
    return raw.replace(str(ROOT) + "/", "").replace(".venv/lib/python3.11/site-packages/", "")


def _area(frame: str) -> str:
    """The package a frame's code belongs to: 'asyncio', 'redis', 'app', ..."""
    where = frame.rpartition("(")[2].rstrip(")")
    if where.startswith("src/app/"):
        return "app (this project)"
    if where.startswith("<frozen"):
        return "imports"
    return where.split("/")[0].removesuffix(".py") or "?"


def _part(title: str, stack: str) -> str:
    for label, needles in PARTS.get(title, []):
        if any(needle in stack for needle in needles):
            return label
    return "the rest: event loop, sockets, asyncio"


def summarize(raw_file: Path, title: str, top: int = 30) -> str:
    parts: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *rest = stack.split(";")  # --threads: the first frame names the thread
        frames = [_frame(f) for f in rest]
        if not frames:
            continue
        total += count
        by_thread[f"{thread} entered at {frames[0]}"] += count
        parts[_part(title, stack)] += count
        self_time[frames[-1]] += count
        by_area[_area(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"# {title}", f"# {total} samples of on-CPU Python stacks (py-spy, idle excluded)"]
    sections = (("part", parts, 10), ("thread", by_thread, 5),
                ("self time by package", by_area, 15),
                ("self time", self_time, top),
                ("inclusive time", inclusive, 2 * top))  # fmt: skip
    for label, counter, limit in sections:
        lines.append(f"\n## top {limit} by {label}")
        for frame, count in counter.most_common(limit):
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
            "--threads", "--output", str(self.raw), "--nonblocking",
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
            # The raw stacks stay beside it for a closer look (git ignores *.tmp).
            shutil.copy(self.raw, RESULTS / f"profile-{self.name}.raw.tmp")

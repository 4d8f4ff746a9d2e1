"""`chain`: 1,000 jobs, each after the previous (`after=`), run by one tracked worker.

A chain is latency-bound: a job starts only once its parent's end is written and it is
released, so the rate is one over a hop (the parent's end written, the child released and
enqueued by the recorder of the worker that ran the parent, the child taken). The chain is
recorded through the outbox (`Enqueuer.enqueue(..., after=[previous])`) before the worker
starts; the rate is read from the rows:

    jobs/s = jobs / (the last job's terminal updated_at - the first job's started_at)

Every job must end `complete`, each after its parent completed, or the run fails.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from app.asgi import build_parts
from app.config import Settings
from app.worker.settings import REGISTRY
from bench.common import Bench, median, rounded
from bench.drain import ARGUMENTS, TASK

LENGTH = 1000


async def _record_chain(bench: Bench, length: int) -> list[UUID]:
    parts = build_parts(Settings.from_env(bench.env()), REGISTRY)
    ids: list[UUID] = []
    try:
        for _ in range(length):
            job = await parts.enqueuer.enqueue(TASK, ARGUMENTS, after=ids[-1:])
            ids.append(job.job_id)
    finally:
        await parts.close()
    return ids


async def chain_once(bench: Bench, length: int) -> dict[str, Any]:
    await bench.reset()
    began = time.monotonic()
    ids = await _record_chain(bench, length)
    recorded_s = time.monotonic() - began
    worker = await bench.start_worker("worker-chain")
    try:
        deadline = time.monotonic() + 60 + length / 20
        while (
            await bench.db.fetchval(
                "SELECT count(*) FROM background_jobs WHERE completed_at IS NOT NULL"
            )
            < length
        ):
            if worker.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the chain did not complete:\n{worker.tail()}")
            await asyncio.sleep(0.2)
    finally:
        await bench.retire(worker, "worker")
    rows = {
        row["job_id"]: row
        for row in await bench.db.fetch(
            "SELECT job_id, status, extract(epoch FROM started_at) AS started,"
            " extract(epoch FROM completed_at) AS ended,"
            " extract(epoch FROM updated_at) AS done FROM background_jobs"
        )
    }
    if any(row["status"] != "complete" for row in rows.values()):
        raise RuntimeError("a job of the chain did not complete")
    for parent, child in itertools.pairwise(ids):
        if rows[child]["started"] < rows[parent]["done"]:
            raise RuntimeError(f"job {child} started before its parent {parent} completed")
    seconds = float(rows[ids[-1]]["done"] - rows[ids[0]]["started"])
    hops = [(rows[p], rows[c]) for p, c in itertools.pairwise(ids)]
    return {
        # Where a hop's time goes (medians, ms): the run, the parent's end written, the
        # child released, enqueued and taken.
        "run_ms": _ms_median(float(c["ended"] - c["started"]) for _, c in hops),
        "written_ms": _ms_median(float(p["done"] - p["ended"]) for p, _ in hops),
        "taken_ms": _ms_median(float(c["started"] - p["done"]) for p, c in hops),
        "jobs_s": rounded(length / seconds, 1),
        "seconds": rounded(seconds, 3),
        "recorded_jobs_s": rounded(length / recorded_s, 1),
    }


def _ms_median(seconds: Iterable[float]) -> float:
    return rounded(median([s * 1000 for s in seconds]), 2)


async def run_chain(bench: Bench) -> dict[str, Any]:
    runs = []
    for i in range(bench.config.pairs):
        runs.append(await chain_once(bench, LENGTH))
        print(f"  chain run {i + 1}: {runs[-1]['jobs_s']} jobs/s", flush=True)
    return {
        "jobs_s": rounded(median([run["jobs_s"] for run in runs]), 1),
        "length": LENGTH,
        "runs": runs,
    }

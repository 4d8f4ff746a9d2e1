"""`e2e`: from the trigger request to a `complete` row, at light load, real API + real worker.

Requests go out at a fixed rate (open loop: a slow answer never delays the next request).
The latency of a job is read from its row after the run, so nothing polls while it runs:

    latency = row.updated_at - the moment the client sent the trigger request

`updated_at` is set by the UPDATE that made the row terminal (PostgreSQL's now(), the same
clock as the client's on this machine), so it is the moment the row said `complete`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.common import TERMINAL, Bench, percentile, rounded
from bench.load import HttpConnection, Request
from bench.trigger import TRIGGER

WARM_UP_JOBS = 25


async def _send_at_rate(
    port: int, rate: float, count: int, sent: dict[str, float], pool_size: int = 16
) -> None:
    """`count` triggers, one every 1/rate s; records job_id -> send time (epoch seconds)."""
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(pool_size):
        pool.put_nowait(HttpConnection(port))

    async def one(request: Request) -> None:
        connection = await pool.get()
        try:
            at = time.time()
            status, body = await connection.request(request)
            if status != 202:
                raise RuntimeError(f"trigger answered {status}: {body[:300]!r}")
            sent[json.loads(body)["job_id"]] = at
        finally:
            pool.put_nowait(connection)

    loop = asyncio.get_running_loop()
    begun = loop.time()
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, begun + i / rate - loop.time()))  # the schedule, not a wait
        tasks.append(asyncio.create_task(one(TRIGGER)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()


async def _wait_terminal(bench: Bench, job_ids: list[str], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        done = await bench.db.fetchval(
            "SELECT count(*) FROM background_jobs WHERE job_id = ANY($1::uuid[]) "
            "AND status = ANY($2)",
            job_ids,
            list(TERMINAL),
        )
        if done == len(job_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {len(job_ids)} e2e rows terminal after {within}s")
        await asyncio.sleep(0.2)


async def run_e2e(bench: Bench) -> dict[str, Any]:
    await bench.reset()
    api, port = await bench.start_api("api-e2e")
    worker = await bench.start_worker("worker-e2e")
    try:
        await worker.wait_for_output('"worker started"')
        rate, seconds = bench.config.e2e_rate, bench.config.e2e_seconds
        warm_up: dict[str, float] = {}
        await _send_at_rate(port, rate, WARM_UP_JOBS, warm_up)
        await _wait_terminal(bench, list(warm_up), within=30)

        sent: dict[str, float] = {}
        begun = time.monotonic()
        await _send_at_rate(port, rate, int(rate * seconds), sent)
        achieved = len(sent) / (time.monotonic() - begun)
        await _wait_terminal(bench, list(sent), within=60)
        rows = await bench.db.fetch(
            """
            SELECT job_id::text, status, extract(epoch FROM created_at) AS created,
                   extract(epoch FROM completed_at) AS completed,
                   extract(epoch FROM updated_at) AS row_done
            FROM background_jobs WHERE job_id = ANY($1::uuid[])
            """,
            list(sent),
        )
    finally:
        await bench.retire(worker, "worker")
        await bench.retire(api, "api")
    if any(row["status"] != "complete" for row in rows):
        raise RuntimeError("an e2e job did not complete")
    latency = [(float(r["row_done"]) - sent[r["job_id"]]) * 1000 for r in rows]
    # The same from inside: row written by the API -> job done in Redis / row terminal.
    job_done = [(float(r["completed"]) - float(r["created"])) * 1000 for r in rows]
    row_done = [(float(r["row_done"]) - float(r["created"])) * 1000 for r in rows]
    return {
        "p50_ms": rounded(percentile(latency, 50)),
        "p99_ms": rounded(percentile(latency, 99)),
        "max_ms": rounded(max(latency)),
        "jobs": len(rows),
        "rate_jobs_s": rounded(achieved, 1),
        "created_to_completed_p50_ms": rounded(percentile(job_done, 50)),
        "created_to_completed_p99_ms": rounded(percentile(job_done, 99)),
        "created_to_row_terminal_p50_ms": rounded(percentile(row_done, 50)),
        "created_to_row_terminal_p99_ms": rounded(percentile(row_done, 99)),
        "measured_as": "row.updated_at (terminal UPDATE) - client send time, read after the run",
    }

"""Procrastinate's side of `make bench-peers`: its app, the no-op task, and a worker process.

    python -m bench.peers.procrastinate_worker   (DATABASE_URL, WORKER_CONCURRENCY)

The worker runs with `wait=False`: it returns once the queue is empty. The process then waits
for SIGTERM, so the harness can still read its CPU from /proc.
"""

from __future__ import annotations

import asyncio
import os
import signal

from procrastinate import App, PsycopgConnector

QUEUE = "bench"


async def noop() -> None:
    await asyncio.sleep(0)  # the same body as the SAQ side's no-op


def make_app(database_url: str) -> App:
    app = App(connector=PsycopgConnector(conninfo=database_url))
    app.task(name="noop", queue=QUEUE)(noop)
    return app


async def main() -> None:
    app = make_app(os.environ["DATABASE_URL"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.open_async():
        print("procrastinate worker started", flush=True)
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                concurrency=int(os.environ["WORKER_CONCURRENCY"]),
                wait=False,
                install_signal_handlers=False,
            )
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([worker, stopped], return_when=asyncio.FIRST_COMPLETED)
        if worker.done():
            worker.result()
            print("procrastinate worker drained", flush=True)
            await asyncio.wait_for(stop.wait(), 120)
        else:
            worker.cancel()  # a capped run: stopped before the queue was empty


if __name__ == "__main__":
    asyncio.run(main())

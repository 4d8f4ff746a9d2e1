"""`litestar --app app.asgi:create_app queues pause|resume|drain <name>`: a queue's pause from a
shell, e.g. around a deploy of workers with new task signatures.

The commands work on DATABASE_URL and REDIS_URL, like the API's calls (the same service, the
same audit rows, with the actor `cli`). `drain` pauses the queue, then prints how many of its
jobs still run every `--every` seconds until none does (exit 0), or until `--timeout` (exit 1;
the queue stays paused).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from litestar.plugins import CLIPluginProtocol

from app.auth.roles import CLI
from app.jobs.control.queues import QueuePauseState, QueuePausing, UnknownQueueError

T = TypeVar("T")
Run = Callable[[Callable[[], Awaitable[T]]], T]


class QueuesCli(CLIPluginProtocol):
    """Adds the `queues` command group to the Litestar CLI."""

    def __init__(self, pausing: QueuePausing, close: Callable[[], Awaitable[None]]) -> None:
        self.pausing = pausing
        self._close = close  # the engine and the Redis client the service used

    def on_cli_init(self, cli: click.Group) -> None:
        cli.add_command(queues_group(self.pausing, self._run))

    def _run(self, work: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                return await work()
            except UnknownQueueError as exc:
                raise click.ClickException(str(exc)) from None
            finally:
                await self._close()

        return asyncio.run(main())


def _said(state: QueuePauseState, running: int) -> str:
    if not state.paused:
        return f"queue {state.name}: not paused; {running} running"
    since = f"{state.paused_at:%Y-%m-%d %H:%M:%S} UTC" if state.paused_at else "?"
    return f"queue {state.name}: paused by {state.paused_by} since {since}; {running} running"


def queues_group(pausing: QueuePausing, run: Run[str]) -> click.Group:
    @click.group(name="queues")
    def queues() -> None:
        """Pause, resume and drain a queue (README, "Pause a queue")."""

    @queues.command(name="pause")
    @click.argument("name")
    def pause(name: str) -> None:
        """Pause a queue: no worker takes its jobs; triggers are still accepted."""

        async def work() -> str:
            state = await pausing.pause(name, CLI)
            return _said(state, await pausing.running(name))

        click.echo(run(work))

    @queues.command(name="resume")
    @click.argument("name")
    def resume(name: str) -> None:
        """Resume a queue: its workers take its jobs again at once."""

        async def work() -> str:
            state = await pausing.resume(name, CLI)
            return _said(state, await pausing.running(name))

        click.echo(run(work))

    @queues.command(name="drain")
    @click.argument("name")
    @click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
                  help="Seconds to wait for the running jobs to end.")  # fmt: skip
    @click.option("--every", type=click.FloatRange(min=0.1), default=1, show_default=True,
                  help="Seconds between two counts of the jobs left.")  # fmt: skip
    def drain(name: str, timeout: float, every: float) -> None:
        """Pause a queue, then wait until none of its jobs runs, printing the count left."""

        async def work() -> str:
            state = await pausing.pause(name, CLI, drain=True)
            until = time.monotonic() + timeout
            running = await pausing.running(name)
            click.echo(_said(state, running))
            while running:
                if time.monotonic() >= until:
                    raise click.ClickException(
                        f"queue {name}: {running} still running after {timeout:g} s "
                        "(it stays paused: drain again to wait more, or resume it)"
                    )
                await asyncio.sleep(every)
                running = await pausing.running(name)
                click.echo(f"queue {name}: {running} running")
            return f"queue {name}: drained, nothing running (paused)"

        click.echo(run(work))

    return queues

"""Worker processes in network namespaces of their own, reaching the servers over veth.

Each namespace gets one end of a veth pair; the other ends hang on a bridge in the host's
namespace that carries the address the servers are opened to. A worker's traffic then goes
through a network stack of its own and a virtual link, as a worker host's would (on the same
cores: this checks the network path, not more CPU). Needs root and `ip netns`; `unavailable`
says why not when a container forbids it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

from bench.common import Bench, Child

TAG = f"cap{os.getpid() % 100_000}"  # names of this run's links and namespaces
SUBNET = f"10.231.{os.getpid() % 250}"
HOST_IP = f"{SUBNET}.1"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why worker namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    probe = f"{TAG}probe"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        return f"ip netns add failed: {stderr.strip() or exc}"
    _ip("netns", "del", probe)
    return None


def _build(count: int) -> list[str]:
    bridge = f"{TAG}br"
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"{HOST_IP}/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    names = []
    for i in range(count):
        name, host_end, inner_end = f"{TAG}ns{i}", f"{TAG}h{i}", f"{TAG}n{i}"
        _ip("netns", "add", name)
        names.append(name)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", inner_end)
        _ip("link", "set", inner_end, "netns", name)
        _ip("link", "set", host_end, "master", bridge)
        _ip("link", "set", host_end, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", inner_end)
        _ip("netns", "exec", name, "ip", "link", "set", inner_end, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
    return names


def _tear_down(count: int) -> None:
    # Deleting a namespace deletes its veth pair; the bridge goes last.
    for i in range(count):
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("netns", "del", f"{TAG}ns{i}")
    with contextlib.suppress(subprocess.SubprocessError):
        _ip("link", "del", f"{TAG}br")


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    """`count` namespaces bridged to HOST_IP, removed on the way out (none for 0)."""
    if count == 0:
        yield []
        return
    try:
        yield _build(count)
    finally:
        _tear_down(count)


async def open_servers(bench: Bench) -> None:
    """Let the bench's Redis and PostgreSQL also listen on HOST_IP (PostgreSQL restarts)."""
    await bench.redis.config_set("bind", f"127.0.0.1 {HOST_IP}")
    # Without a password Redis answers only loopback clients unless told otherwise.
    await bench.redis.config_set("protected-mode", "no")
    postgres = bench.postgres
    if postgres is None:
        raise RuntimeError("no PostgreSQL of our own to open")
    await bench.db.execute(f"ALTER SYSTEM SET listen_addresses = '127.0.0.1,{HOST_IP}'")
    with (postgres.data_dir / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {SUBNET}.0/24 scram-sha-256\n")
    # The pool warns while it cannot reconnect during the restart: expected here.
    pool_log = logging.getLogger("asyncpg.pool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        await asyncio.to_thread(postgres.stop, "fast")
        await asyncio.to_thread(postgres.start)
        await bench.db.expire_connections()
        await bench.db.fetchval("SELECT 1")
    finally:
        pool_log.setLevel(level)


@dataclass
class NamespacedBench(Bench):
    """The same servers and harness, but every process it spawns (the workers) runs in the
    next namespace of `names`, round robin, and reaches the servers at HOST_IP."""

    names: Sequence[str] = ()
    placed: int = 0

    @classmethod
    def around(cls, bench: Bench, names: Sequence[str]) -> NamespacedBench:
        shared = {f.name: getattr(bench, f.name) for f in fields(Bench)}
        return cls(
            **shared | {
                "database_url": bench.database_url.replace("127.0.0.1", HOST_IP),
                "redis_url": bench.redis_url.replace("127.0.0.1", HOST_IP),
            },
            names=names,
        )  # fmt: skip

    async def spawn(self, name: str, command: list[str], **extra_env: str) -> Child:
        namespace = self.names[self.placed % len(self.names)]
        self.placed += 1
        return await super().spawn(name, ["ip", "netns", "exec", namespace, *command], **extra_env)

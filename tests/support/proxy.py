"""A TCP proxy in front of a real Redis, in the test's event loop, that can lose a reply.

Faults between a client and Redis, made deterministic: the request that carries a marker is
forwarded and run by Redis, then its connection is dropped before the reply comes back (the
client cannot tell whether it ran); new connections can be held (accepted, not yet bridged:
the client waits) or refused (the port stops listening, as when Redis is unreachable).

    proxy = await RedisProxy.start(redis_url)
    lost = proxy.lose_reply_to(script.sha.encode(), then_hold=True)
    ...; await lost.wait(); ...                     # Redis ran it, the client saw the drop
    proxy.release()                                 # held connections go through now
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    doomed: bool = False  # its next reply is lost, and the link with it


@dataclass(eq=False)
class RedisProxy:
    target_host: str
    target_port: int
    db: int = 0
    _server: asyncio.Server | None = None
    _links: set[_Link] = field(default_factory=set)
    _marker: bytes | None = None
    _lost: asyncio.Event = field(default_factory=asyncio.Event)
    _hold_after: bool = False
    _open: asyncio.Event = field(default_factory=asyncio.Event)  # set: new links go through
    refusing: bool = False
    port: int = 0
    connections: int = 0  # accepted so far

    @classmethod
    async def start(cls, redis_url: str) -> RedisProxy:
        parts = urlsplit(redis_url)
        db = int(parts.path.strip("/") or 0)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 6379, db)
        proxy._open.set()
        await proxy._listen()
        return proxy

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def lose_reply_to(self, marker: bytes, *, then_hold: bool = False) -> asyncio.Event:
        """The next request containing `marker` reaches Redis; its reply does not reach the
        client, whose connection is dropped instead. `then_hold`: new connections wait for
        `release()` from then on. The event is set once the reply was lost."""
        self._marker, self._hold_after = marker, then_hold
        self._lost = asyncio.Event()
        return self._lost

    def hold(self) -> None:
        """New connections are accepted but wait, unbridged, until `release()`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def refuse(self, *, drop: bool = True) -> None:
        """Stop listening until `allow()` (a client's connect is refused: Redis unreachable);
        `drop`: the open connections are dropped too."""
        self.refusing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        if drop:
            for link in list(self._links):
                self._drop(link)

    async def allow(self) -> None:
        self.refusing = False
        self._open.set()
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        await self.refuse()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        if self.refusing:
            self._drop(link)
            return
        self._links.add(link)
        await self._open.wait()
        if self.refusing or link not in self._links:
            self._drop(link)
            return
        try:
            server_reader, link.server = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            self._drop(link)
            return
        await asyncio.gather(
            self._pump(reader, link, upstream=True),
            self._pump(server_reader, link, upstream=False),
            return_exceptions=True,
        )
        self._drop(link)

    async def _pump(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        while link in self._links:
            data = await reader.read(_CHUNK)
            if not data:
                return
            if upstream and self._marker is not None and self._marker in data:
                self._marker, link.doomed = None, True
            if not upstream and link.doomed:
                if self._hold_after:
                    self._open.clear()
                self._drop(link)
                self._lost.set()
                return
            target = link.server if upstream else link.client
            if target is None:
                return
            target.write(data)
            await target.drain()

    def _drop(self, link: _Link) -> None:
        self._links.discard(link)
        for writer in (link.client, link.server):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()

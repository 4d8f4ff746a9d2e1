"""An open-loop HTTP load: requests sent on a fixed schedule, whatever the answers do.

A closed loop (wrk -c N) sends the next request only when an answer arrives, so a slow
server is asked less often and its queue never shows in the latency ("coordinated
omission"). Here request k is due at `start + k / rate`; it goes out on an idle keep-alive
connection (a new one is opened when every connection is busy), and its latency runs from
the moment it was DUE to its answer's last byte: a generator that falls behind counts its
own lag against the server, never in its favour. How late sends went out is reported too
(`send_lag_p99_ms`), to tell the generator's lag from the server's.

Raw asyncio protocols, no HTTP library: enough HTTP/1.1 for this API's answers
(Content-Length bodies, keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import BENCH_API_KEY, percentile, rounded
from bench.load import Request

MAX_CONNECTIONS = 512  # past this a request waits for a connection (its wait counts)


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float  # requests per second asked for
    sent: int
    answered: int
    errors: int  # non-2xx answers
    unanswered: int  # no answer 10 s after the last request was due
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    send_lag_p99_ms: float  # how late the generator sent, due time to send
    connections: int  # connections it needed

    def as_dict(self) -> dict[str, float]:
        return {
            "rate": rounded(self.rate, 1),
            "sent": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "unanswered": self.unanswered,
            "p50_ms": rounded(self.p50_ms),
            "p95_ms": rounded(self.p95_ms),
            "p99_ms": rounded(self.p99_ms),
            "max_ms": rounded(self.max_ms),
            "send_lag_p99_ms": rounded(self.send_lag_p99_ms),
            "connections": self.connections,
        }


class _Tally:
    """Answers so far; `all_in` is set once `expected` have come."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.answered = 0
        self.all_in = asyncio.Event()

    def one_more(self) -> None:
        self.answered += 1
        if self.answered >= self.expected:
            self.all_in.set()


class _Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, done: asyncio.Queue[_Client], tally: _Tally) -> None:
        self._done = done
        self._tally = tally
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._due = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def send(self, wire: bytes, due: float) -> None:
        assert self._transport is not None
        self._due = due
        self._buffer = b""
        self._transport.write(wire)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self._buffer[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self._buffer) < head_end + 4 + length:
            return
        self.latencies.append(time.perf_counter() - self._due)
        status = int(head.split(" ", 2)[1])
        self.errors += not 200 <= status < 300
        self._done.put_nowait(self)
        self._tally.one_more()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _wire(request: Request, port: int) -> bytes:
    head = (
        f"{request.method} {request.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {BENCH_API_KEY}\r\n"
        f"Content-Length: {len(request.body)}\r\n\r\n"
    )
    return head.encode() + request.body


async def open_loop(
    port: int, requests: Sequence[Request], *, rate: float, seconds: float, prepared: int = 16
) -> OpenLoopResult:
    """`rate` requests a second for `seconds`, cycling over `requests`."""
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[_Client] = asyncio.Queue()
    clients: list[_Client] = []
    total = int(rate * seconds)
    tally = _Tally(total)

    async def connect() -> _Client:
        _, client = await loop.create_connection(lambda: _Client(idle, tally), "127.0.0.1", port)
        clients.append(client)
        return client

    for _ in range(prepared):
        idle.put_nowait(await connect())
    wires = [_wire(request, port) for request in requests]
    lags: list[float] = []
    start = time.perf_counter() + 0.05
    for k in range(total):
        due = start + k / rate
        wait = due - time.perf_counter()
        if wait > 0.0005:
            await asyncio.sleep(wait)
        client: _Client | None = None
        while client is None and not idle.empty():
            candidate = idle.get_nowait()
            client = None if candidate.lost else candidate
        if client is None and len(clients) < MAX_CONNECTIONS:
            client = await connect()
        while client is None or client.lost:  # all busy: the server is behind, and it shows
            client = await idle.get()
        lags.append(time.perf_counter() - due)
        client.send(wires[k % len(wires)], due)
    # Every answer, or ten seconds of waiting for the last ones.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.all_in.wait(), 10)
    for client in clients:
        client.close()
    latencies = [value for client in clients for value in client.latencies]
    if not latencies:
        raise RuntimeError("the open-loop generator got no answer")
    return OpenLoopResult(
        rate=rate,
        sent=total,
        answered=len(latencies),
        errors=sum(c.errors for c in clients),
        unanswered=total - len(latencies),
        p50_ms=percentile(latencies, 50) * 1000,
        p95_ms=percentile(latencies, 95) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=max(latencies) * 1000,
        send_lag_p99_ms=percentile(lags, 99) * 1000,
        connections=len(clients),
    )

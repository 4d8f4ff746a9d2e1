"""HTTP load: wrk when installed, else a small keep-alive asyncio client; one result shape."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.app import GC_PATH
from bench.common import BENCH_API_KEY, Bench, Child, percentile, rounded


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int  # transport errors and non-2xx answers
    p50_ms: float
    p99_ms: float
    p95_ms: float = 0.0  # the monitor's page is held to its p95

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "req_s": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "requests": self.requests,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""


async def closed_loop(
    tool: str,
    port: int,
    requests: Sequence[Request],
    *,
    connections: int,
    seconds: float,
    workdir: Path,
) -> LoadResult:
    """`connections` clients, each sending its next request as soon as an answer arrives."""
    if tool == "wrk":
        return await _wrk(port, requests, connections=connections, seconds=seconds, workdir=workdir)
    return await _python(port, requests, connections=connections, seconds=seconds)


async def measured(
    bench: Bench, api: Child, requests: Sequence[Request], *, connections: int, seconds: float
) -> tuple[LoadResult, dict[str, float]]:
    """A closed-loop run that fails on any error, with the CPU each answer cost the API
    process (user and kernel), PostgreSQL and Redis (which of them is busy, which waits),
    and the API's garbage-collector pauses during the run (`api` runs bench.app)."""
    gc_before = len(await _gc_pauses(api.port))
    api_before, servers_before = api.cpu_seconds(), bench.server_cpu_seconds()
    result = await closed_loop(
        bench.config.loadgen,
        api.port,
        requests,
        connections=connections,
        seconds=seconds,
        workdir=bench.workdir,
    )
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests on {requests[0].path}")
    (user, system), servers = api.cpu_seconds(), bench.server_cpu_seconds()
    pauses = [ms for _, ms in (await _gc_pauses(api.port))[gc_before:]]
    per_request = 1000 / result.requests
    cpu = {
        "api_cpu_user_ms_per_req": rounded((user - api_before[0]) * per_request, 3),
        "api_cpu_sys_ms_per_req": rounded((system - api_before[1]) * per_request, 3),
        **{
            f"{name}_cpu_ms_per_req": rounded((used - servers_before[name]) * per_request, 3)
            for name, used in servers.items()
        },
        "api_gc_pauses": len(pauses),
        "api_gc_pause_max_ms": rounded(max(pauses, default=0.0)),
        "api_gc_pause_total_ms": rounded(sum(pauses), 1),
    }
    return result, cpu


async def _gc_pauses(port: int) -> list[list[float]]:
    """The API's garbage-collector pauses so far (bench.app's GET /bench/gc)."""
    connection = HttpConnection(port)
    try:
        status, body = await connection.request(Request("GET", GC_PATH))
    finally:
        await connection.close()
    if status != 200:
        raise RuntimeError(f"{GC_PATH} answered {status}: is this bench.app:create_bench_app?")
    return list(json.loads(body))


CPU_KEYS = (
    "api_cpu_user_ms_per_req",
    "api_cpu_sys_ms_per_req",
    "postgres_cpu_ms_per_req",
    "redis_cpu_ms_per_req",
    "api_gc_pauses",
    "api_gc_pause_max_ms",
    "api_gc_pause_total_ms",
)


# -- wrk ---------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local requests = {%(requests)s}
local counter = 0
request = function()
  counter = counter + 1
  return requests[(counter %% #requests) + 1]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"errors\\": %%d, " ..
    "\\"p50_us\\": %%d, \\"p95_us\\": %%d, \\"p99_us\\": %%d}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def _wrk_script(requests: Sequence[Request]) -> str:
    headers = (
        '{["Content-Type"] = "application/json", '
        f'["Authorization"] = {_lua_string("Bearer " + BENCH_API_KEY)}}}'
    )
    formatted = ", ".join(
        f"wrk.format({_lua_string(r.method)}, {_lua_string(r.path)}, {headers}, "
        f"{_lua_string(r.body.decode()) if r.body else 'nil'})"
        for r in requests
    )
    return _WRK_SCRIPT % {"requests": formatted}


async def _wrk(
    port: int, requests: Sequence[Request], *, connections: int, seconds: float, workdir: Path
) -> LoadResult:
    script = workdir / "wrk.lua"
    script.write_text(_wrk_script(requests))
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds:g}s",
        "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), seconds + 60)
    text = output.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            return LoadResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                errors=raw["errors"],
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                p95_ms=raw["p95_us"] / 1000,
            )
    raise RuntimeError(f"wrk gave no result:\n{text}")


# -- the Python fallback -----------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; enough HTTP for this API's JSON answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, req: Request) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        head = (
            f"{req.method} {req.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {BENCH_API_KEY}\r\n"
            f"Content-Length: {len(req.body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + req.body)
        await self._writer.drain()
        status = int((await self._reader.readline()).split()[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise RuntimeError("chunked answers are not supported by this client")
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def _python(
    port: int, requests: Sequence[Request], *, connections: int, seconds: float
) -> LoadResult:
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        connection = HttpConnection(port)
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    status, _ = await connection.request(random.choice(requests))
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    errors += 1
                    await connection.close()
                    continue
                latencies.append(time.perf_counter() - started)
                errors += not 200 <= status < 300
        finally:
            await connection.close()

    begun = time.monotonic()
    deadline = begun + seconds
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.monotonic() - begun
    if not latencies:
        raise RuntimeError("the load generator got no answer")
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        errors=errors,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        p95_ms=percentile(latencies, 95) * 1000,
    )

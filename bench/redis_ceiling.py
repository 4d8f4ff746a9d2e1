"""`redis_ceiling`: what the bench's own Redis serves on this machine, command by command.

`redis-benchmark` (Debian's redis-tools, installed with redis-server) sends the commands a
job costs, pipelining off, at a few client counts, to the benchmark's Redis (same build,
same settings, same cores as the workers had). Each value is a job-sized string. SAQ's
finish is a MULTI block; redis-benchmark sends one command per request, so the block is
measured as one script doing the same writes (`multi_block_as_script`).

`implied(results)` then reads the drain's commands per job (INFO commandstats) against these
rates: the jobs/s at which Redis alone would be busy all the time, by two estimates.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
from typing import Any

from bench.common import Bench, median, rounded

# Clients -> requests per run: one client measures the round trip, not the ceiling.
CLIENTS = {1: 5_000, 10: 30_000, 50: 30_000}
VALUE = "v" * 400  # about a serialized SAQ job
DEQUEUE_SCRIPT = (
    "local job = redis.call('LMOVE', KEYS[1], KEYS[1], 'RIGHT', 'LEFT') "
    "redis.call('ZADD', KEYS[2], ARGV[1], job) return job"
)
FINISH_SCRIPT = (
    "redis.call('SET', KEYS[1], ARGV[1]) redis.call('LREM', KEYS[2], 1, 'none') "
    "redis.call('ZREM', KEYS[3], 'none') return redis.call('PUBLISH', KEYS[1], ARGV[1])"
)
# name -> the command line; __rand_int__ is redis-benchmark's random key (-r).
COMMANDS: dict[str, list[str]] = {
    "ping": ["PING"],
    "lmove": ["LMOVE", "rc:queued", "rc:queued", "RIGHT", "LEFT"],
    "blmove": ["BLMOVE", "rc:queued", "rc:queued", "RIGHT", "LEFT", "1"],
    "get": ["GET", "rc:job:__rand_int__"],
    "set": ["SET", "rc:job:__rand_int__", VALUE],
    "evalsha": ["EVALSHA", "<dequeue>", "2", "rc:queued", "rc:incomplete", "1"],
    "multi_block_as_script": [
        "EVALSHA", "<finish>", "3", "rc:job:__rand_int__", "rc:active", "rc:incomplete", VALUE,
    ],
    "publish": ["PUBLISH", "rc:channel", VALUE],
    "zadd": ["ZADD", "rc:incomplete", "__rand_int__", "rc:job:__rand_int__"],
    "zrem": ["ZREM", "rc:incomplete", "rc:job:__rand_int__"],
    "xadd": ["XADD", "rc:stream", "MAXLEN", "~", "10000", "*", "job", VALUE],
}  # fmt: skip
# Which measured command stands for each command Redis counted during the drain.
STANDS_FOR = {
    "lmove": "lmove", "blmove": "blmove", "rpoplpush": "lmove", "brpoplpush": "blmove",
    "get": "get", "mget": "get", "set": "set", "setex": "set", "psetex": "set",
    "evalsha": "evalsha", "eval": "evalsha", "publish": "publish", "zadd": "zadd",
    "zrem": "zrem", "xadd": "xadd", "multi": "ping", "exec": "ping",
}  # fmt: skip


# The harness's own commands: the reset and the reading itself.
HARNESS_COMMANDS = {"config|resetstat", "info"}


async def redis_calls(bench: Bench) -> dict[str, int]:
    """Calls per Redis command since the last CONFIG RESETSTAT, as Redis counts them."""
    stats = await bench.redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    return {name: count for name, count in calls.items() if name not in HARNESS_COMMANDS}


def per_job(calls: dict[str, int], n: int) -> dict[str, float]:
    return {name: rounded(count / n, 3) for name, count in sorted(calls.items()) if count}


async def _redis_benchmark(port: int, clients: int, requests: int, command: list[str]) -> float:
    process = await asyncio.create_subprocess_exec(
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
        "-n", str(requests), "-P", "1", "-r", "10000", "--csv", *command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    rows = list(csv.DictReader(io.StringIO(output.decode(errors="replace"))))
    if process.returncode != 0 or not rows or "rps" not in rows[-1]:
        raise RuntimeError(f"redis-benchmark {command[0]} failed:\n{output.decode()[-1000:]}")
    return float(rows[-1]["rps"])


async def run_redis_ceiling(bench: Bench) -> dict[str, Any]:
    if shutil.which("redis-benchmark") is None or bench.redis_server is None:
        return {"available": False, "why": "redis-benchmark not found (Debian: redis-tools)"}
    await bench.reset()
    await bench.redis.rpush("rc:queued", *[f"rc:job:{i}" for i in range(1000)])  # type: ignore[misc]
    shas = {
        "<dequeue>": await bench.redis.script_load(DEQUEUE_SCRIPT),
        "<finish>": await bench.redis.script_load(FINISH_SCRIPT),
    }
    scale = 5 if bench.config.quick else 1
    ops: dict[str, dict[str, float]] = {}
    try:
        for name, command in COMMANDS.items():
            line = [shas.get(word, word) for word in command]
            ops[name] = {
                str(clients): rounded(
                    await _redis_benchmark(bench.redis_server.port, clients, n // scale, line), 0
                )
                for clients, n in CLIENTS.items()
            }
    finally:
        await bench.reset()
    best = {name: max(by_clients.values()) for name, by_clients in ops.items()}
    print("  redis ceiling (ops/s, best of clients " + ", ".join(map(str, CLIENTS)) + "): "
          + ", ".join(f"{name} {rate:.0f}" for name, rate in best.items()), flush=True)  # fmt: skip
    return {
        "ops_s": ops,
        "best_ops_s": best,
        "requests_per_run": {str(c): n // scale for c, n in CLIENTS.items()},
        "pipelining": False,
    }


def _jobs_s_by_commands(calls: dict[str, float], best: dict[str, float]) -> float:
    """1 / (the seconds Redis needs for one job's commands, each at its own measured rate).
    Commands a script runs count as commands of their own: an estimate on the low side."""
    fallback = median(list(best.values()))
    seconds = sum(
        count / best.get(STANDS_FOR.get(name, ""), fallback) for name, count in calls.items()
    )
    return 1 / seconds if seconds else 0.0


def implied(results: dict[str, Any]) -> dict[str, Any] | None:
    """The jobs/s Redis's ceiling allows each drain side, and how far the tracked worker is."""
    ceiling, drain = results.get("redis_ceiling"), results.get("drain")
    if not ceiling or not ceiling.get("best_ops_s") or not drain:
        return None
    best = ceiling["best_ops_s"]
    by_commands = {
        side: rounded(_jobs_s_by_commands(calls, best), 0)
        for side, calls in drain["redis_calls_per_job"].items()
    }
    # Redis's CPU per job in the drain: a whole core of it would serve 1000 / ms jobs/s.
    by_cpu = {
        side: rounded(1000 / ms, 0) if (ms := drain[f"{side}_redis_cpu_ms_per_job"]) else None
        for side in ("plain", "tracked")
    }
    return {
        "implied_jobs_s": by_commands,
        "implied_jobs_s_by_redis_cpu": by_cpu,
        "tracked_share_of_ceiling": rounded(drain["tracked_jobs_s"] / by_commands["tracked"], 3)
        if by_commands["tracked"]
        else None,
    }

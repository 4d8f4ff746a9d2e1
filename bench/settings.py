"""The servers' settings as they answer for themselves, for the results file.

Read back with a query, never written from what we meant to configure: a figure is only
comparable with another measured on the same durability.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

POSTGRES_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "max_wal_size",
    "checkpoint_timeout",
    "max_connections",
    "jit",
)
REDIS_SETTINGS = ("appendonly", "appendfsync", "save", "io-threads", "maxmemory-policy")


async def postgres_settings(db: asyncpg.Pool) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name",
        list(POSTGRES_SETTINGS),
    )
    return {row["name"]: row["value"] for row in rows}


async def redis_settings(redis: Redis) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in REDIS_SETTINGS:
        found.update(await redis.config_get(name))
    return {
        (key.decode() if isinstance(key, bytes) else key): (
            value.decode() if isinstance(value, bytes) else value
        )
        for key, value in found.items()
    }


def durability(settings: dict[str, str]) -> str:
    """The run's label: `default` when every durability switch is on, else `relaxed`."""
    switches = ("fsync", "synchronous_commit", "full_page_writes")
    return "default" if all(settings.get(name) == "on" for name in switches) else "relaxed"

"""Bytes a tracked job costs on disk, for docs/scaling.md's "how long can history be kept":

    uv run --locked python -m bench.row_size      # writes bench/results/row_size.json

On a throwaway PostgreSQL 15 (durable, as `make bench`) migrated to head, BENCH_ROW_JOBS
jobs (default 50,000) go the whole way a real job goes: their rows inserted `queued` as the
outbox writes them, their jobs drained by a real tracked worker (`litestar ... workers run`),
which moves each row to `running` and `complete` through the recorder's batched UPDATEs.
Then autovacuum's work is done by hand (VACUUM ANALYZE, not FULL: the free space the
updates left stays in the table, as it does in production) and the partition holding them
is measured: heap, TOAST and every index, per row. WAL is measured over the whole life.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from bench.common import ROOT, Bench, Config, bench_context, rounded
from bench.drain import drain_once

_SIZES = """
SELECT sum(pg_relation_size(c.oid)) AS heap,
       sum(pg_total_relation_size(c.oid) - pg_relation_size(c.oid) - pg_indexes_size(c.oid))
           AS toast,
       sum(pg_indexes_size(c.oid)) AS indexes,
       sum(pg_total_relation_size(c.oid)) AS total
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'background_jobs'::regclass AND c.reltuples > 0
"""
_PER_INDEX = """
SELECT p.relname AS parent_index, sum(pg_relation_size(c.oid)) AS bytes
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_class AS p ON p.oid = i.inhparent
JOIN pg_index AS x ON x.indexrelid = c.oid JOIN pg_class AS t ON t.oid = x.indrelid
WHERE p.relkind = 'I' AND p.relname LIKE '%background_jobs%' AND t.reltuples > 0
GROUP BY p.relname ORDER BY bytes DESC
"""


async def measure(bench: Bench, jobs: int) -> dict[str, Any]:
    async with bench.db.acquire() as connection:
        wal_before = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
    drained = await drain_once(bench, "tracked")
    async with bench.db.acquire() as connection:
        wal = await connection.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", wal_before
        )
        rows = await connection.fetchval("SELECT count(*) FROM background_jobs")
        await connection.execute("VACUUM ANALYZE background_jobs")
        sizes = dict(await connection.fetchrow(_SIZES))
        per_index = {r["parent_index"]: int(r["bytes"]) for r in await connection.fetch(_PER_INDEX)}
    return {
        "jobs": rows,
        "drain_jobs_s": drained["jobs_s"],
        "bytes_per_row": {name: rounded(int(size) / rows, 1) for name, size in sizes.items()},
        "index_bytes_per_row": {name: rounded(size / rows, 1) for name, size in per_index.items()},
        "wal_bytes_per_job": rounded(int(wal) / rows, 1),
    }


async def main() -> int:
    jobs = int(os.environ.get("BENCH_ROW_JOBS") or 50_000)
    os.environ["BENCH_DRAIN_JOBS"] = str(jobs)
    config = Config.from_env()
    started = datetime.now(UTC)
    async with bench_context(config) as bench:
        result = await measure(bench, jobs)
    result = {"started": started.isoformat(), "command": "python -m bench.row_size", **result}
    out = ROOT / "bench" / "results" / "row_size.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

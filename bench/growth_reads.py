"""The reads `make bench-growth` measures, each a list of requests a run cycles over: one job by
id, the list with each filter the API offers (a few values each), the monitor's jobs page
for each filter its UI offers, the stats for every window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from bench.common import Bench
from bench.growth_data import PROJECTS, QUEUES, USERS, WORKERS
from bench.load import HttpConnection, Request

LIMIT = 50
VALUES = 4  # values of each filter a run cycles over


async def _ids(bench: Bench, prefix: str, count: int, modulo: int) -> list[str]:
    """Ids the generator made as `md5(prefix || k)::uuid`, spread over its range."""
    rows = await bench.db.fetch(
        "SELECT md5($1 || (k * $3 / $2))::uuid AS id FROM generate_series(0, $2 - 1) AS k",
        prefix,
        count,
        modulo,
    )
    return [str(row["id"]) for row in rows]


async def _job_ids(bench: Bench, count: int) -> list[str]:
    """A sample of the table's jobs, from every partition (a few pages of each)."""
    rows = await bench.db.fetch(
        "SELECT job_id FROM background_jobs TABLESAMPLE SYSTEM (1) LIMIT $1", count
    )
    return [str(row["job_id"]) for row in rows]


async def _next_pages(port: int, paths: list[str]) -> list[str]:
    """The second page of each list, through its `next_cursor`."""
    connection = HttpConnection(port)
    found = []
    try:
        for path in paths:
            status, body = await connection.request(Request("GET", path))
            cursor = json.loads(body).get("next_cursor") if status == 200 else None
            if cursor is None:
                raise RuntimeError(f"no second page for {path}: {status} {body[:200]!r}")
            found.append(f"{path}&cursor={cursor}")
    finally:
        await connection.close()
    return found


async def read_requests(bench: Bench, port: int) -> dict[str, list[Request]]:
    users = await _ids(bench, "user-", VALUES, USERS)
    projects = await _ids(bench, "project-", VALUES, PROJECTS)
    tasks = [f"task_{k:02d}" for k in (0, 3, 9, 19)]  # common to rare
    workers = [f"worker-{k}" for k in range(0, WORKERS, WORKERS // VALUES)]
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    windows = [
        f"created_after={(day - timedelta(days=k)):%Y-%m-%dT%H:%M:%SZ}"
        f"&created_before={(day - timedelta(days=k - 1)):%Y-%m-%dT%H:%M:%SZ}"
        for k in range(VALUES)
    ]
    lists: dict[str, list[str]] = {
        "list_no_filter": [""],
        "list_status": ["status=complete", "status=failed", "status=queued", "status=aborted"],
        "list_statuses": ["status=failed,aborted", "status=queued,running"],
        "list_task_name": [f"task_name={t}" for t in tasks],
        "list_queue": [f"queue={q}" for q in QUEUES],
        "list_worker_id": [f"worker_id={w}" for w in workers],
        "list_user_id": [f"user_id={u}" for u in users],
        "list_project_id": [f"project_id={p}" for p in projects],
        "list_created_window": windows,
        "list_has_error": ["has_error=true", "has_error=false"],
        "list_q_error": ["q=" + quote('error:"took too long"'), "q=" + quote("error:bad")],
        "list_q_args": ["q=" + quote(f"args.order_id:{k}") for k in (7, 70, 700, 7000)],
        "list_q_word": ["q=" + quote("timeout"), "q=" + quote("task_0")],
        "list_combined": [f"status=failed&user_id={u}" for u in users[:2]]
        + [f"project_id={p}&task_name={t}" for p, t in zip(projects[:2], tasks, strict=False)],
    }
    found = {
        name: [Request("GET", f"/api/v1/jobs?{query}&limit={LIMIT}") for query in queries]
        for name, queries in lists.items()
    }
    first_pages = [f"/api/v1/jobs?status=complete&project_id={p}&limit={LIMIT}" for p in projects]
    found["list_next_page"] = [Request("GET", p) for p in await _next_pages(port, first_pages)]
    found["get_one_job"] = [Request("GET", f"/api/v1/jobs/{i}") for i in await _job_ids(bench, 500)]
    monitor = [
        "",
        "queue=emails",
        f"status=complete&user_id={users[0]}",
        f"status=failed,aborted&task_name={tasks[1]}",
        f"project_id={projects[0]}",
        f"worker_id={workers[1]}&has_error=true",
        "q=" + quote("task:task_03 status:failed"),
    ]
    found["monitor_jobs_page"] = [Request("GET", f"/monitor?{m}&limit={LIMIT}") for m in monitor]
    for window in ("5m", "15m", "1h", "6h", "24h", "7d"):
        found[f"stats_{window}"] = [Request("GET", f"/api/v1/jobs/stats?window={window}")]
    found["stats_7d_one_project"] = [
        Request("GET", f"/api/v1/jobs/stats?window=7d&project_id={p}") for p in projects
    ]
    return found

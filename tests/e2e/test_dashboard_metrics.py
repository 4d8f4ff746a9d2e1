"""Every metric the alert rules and the Grafana dashboard read is one `/metrics` of a running
stack exposes: the API and a worker started as the README starts them, after a few jobs
(one of them failing) and the worker's first maintenance passes.

A name only Prometheus makes (`up`) is the one exception. The names are read from the
PromQL of deploy/prometheus/alerts.yml and deploy/grafana/tracked-jobs.json
(tests/support/promql.py; its reading is checked in tests/deploy). The other way round,
every `bgjobs_` metric the scrape exposes is in the README's table of metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from app.jobs.metrics import LOOPS
from tests.support import ROOT, Servers, app_env, eventually, make_settings
from tests.support.processes import app_and_worker
from tests.support.promql import PROMETHEUS_SERIES, used_metric_names
from tests.support.scrape import Scrape, samples, value


def call(origin: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{origin}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
        return json.loads(text) if body is not None else text


def documented_metrics() -> set[str]:
    """The names in the first column of the README's table of metrics."""
    rows = (ROOT / "README.md").read_text().splitlines()
    return {
        name
        for row in rows
        if row.startswith("| `bgjobs_")
        for name in re.findall(r"`(bgjobs_\w+)`", row.split("|")[1])
    }


async def test_every_metric_the_alerts_and_the_dashboard_read_is_exposed(
    servers: Servers, database_url: str
) -> None:
    """Catches: a query on a metric that was renamed, never exported, or exported only by
    a process the scrape does not read (a worker's counts that never reach Redis)."""
    settings = make_settings(database_url, servers.redis_url)
    queue = settings.queue_name
    with app_and_worker(app_env(settings)) as origin:
        for n in range(3):
            body = {"message": f"job {n}", "sleep_seconds": 0, "fail": n == 2}
            assert call(origin, "/api/v1/tasks/trigger-test", body)["job_id"]

        async def everything_counted() -> Scrape | None:
            scrape = samples(call(origin, "/metrics"))
            finished = [
                value(scrape, "bgjobs_finished_total", queue=queue, task="trigger_test", status=s)
                for s in ("complete", "failed")
            ]
            last_success = "bgjobs_maintenance_last_success_timestamp_seconds"
            passes = [value(scrape, last_success, queue=queue, loop=loop) for loop in LOOPS]
            return scrape if finished == [2, 1] and all(passes) else None

        # The worker adds its counts to Redis every 5 s (PUBLISH_INTERVAL).
        scrape = await eventually(everything_counted, within=60, what="the worker's counts")
    exposed = {name for name, _ in scrape}
    used = used_metric_names()
    assert len(used) >= 15, sorted(used)
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert set(missing) <= PROMETHEUS_SERIES, missing
    documented = documented_metrics()
    undocumented = {
        name
        for name in exposed
        if name.startswith("bgjobs_")
        and name not in documented
        and re.sub(r"_(bucket|count|sum)$", "", name) not in documented
    }
    assert not undocumented, "exposed, not in the README's table of metrics"

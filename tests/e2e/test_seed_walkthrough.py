"""The seed's five steps, as the README tells a new user to run them, on real processes.

`make dev` starts the API and a worker (migrating the empty database first); the README's
curl command triggers jobs; the worker's lines appear in `make dev`'s output; the README's
psql query shows the row. Then Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request

from tests.support import Running, Servers, free_port, processes_of
from tests.support.readme import run_readme_curl, run_readme_psql, wait_until_up


def test_make_dev_then_the_seed_steps(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "LOG_JSON"},
        "DATABASE_URL": fresh_database_url,
        "REDIS_URL": servers.redis_url,
        "SAQ_QUEUE_NAME": f"e2e-{port}",
        "API_PORT": str(port),
    }
    make_dev = Running(["make", "dev"], env, "make dev")
    processes.append(make_dev)
    wait_until_up(port, make_dev)

    # Steps 2 and 3: the seed's curl, the exact body back.
    accepted = run_readme_curl(port)
    assert set(accepted) == {"message", "job_id"}
    assert accepted["message"] == "Test task accepted and queued for processing"
    job_id = accepted["job_id"]

    # Step 4: the worker's line for this job, in make dev's output.
    finished = make_dev.wait_for_line(
        lambda line: line.startswith("worker |") and "job finished" in line and job_id in line
    )
    assert "status=complete" in finished
    assert "task=trigger_test" in finished
    assert re.search(r"duration_ms=\d+", finished)
    assert any("job started" in line and job_id in line for line in make_dev.lines), (
        "no 'job started' line"
    )

    # Step 5: the seed's psql query shows the row, complete.
    row = run_readme_psql(fresh_database_url)
    assert job_id in row
    assert "complete" in row
    assert "Test message" in row

    # The same for a failing job: failed, with the error text.
    failing = run_readme_curl(port, '{"message": "Test message", "fail": true}')
    make_dev.wait_for_line(lambda line: "job finished" in line and failing["job_id"] in line)
    row = run_readme_psql(fresh_database_url)
    assert failing["job_id"] in row
    assert "failed" in row
    assert "TestTaskFailure: test task failed on request: Test message" in row

    # The API tells the same story, and /saq shows the queue.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}") as answer:
        assert json.load(answer)["status"] == "complete"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/saq/api/queues") as answer:
        assert f"e2e-{port}" in [queue["name"] for queue in json.load(answer)["queues"]]

    # Ctrl-C stops everything make dev started: make, uv, dev.py, the API and the worker all
    # carry this run's queue name in their environment (it used the session's servers).
    marker = f"SAQ_QUEUE_NAME=e2e-{port}"
    running = "\n".join(processes_of(marker))
    for process in ("scripts/dev.py", "uvicorn", "workers run"):
        assert process in running, running
    assert "dev: using DATABASE_URL" in make_dev.output
    assert "dev: using REDIS_URL" in make_dev.output
    make_dev.stop(signal.SIGINT)
    assert "dev: stopped" in make_dev.output
    assert processes_of(marker) == []

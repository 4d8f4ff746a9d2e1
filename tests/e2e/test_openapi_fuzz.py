"""schemathesis against the real API: every phase, every check, and nothing found.

The API runs as `uvicorn` on a fresh migrated database with access checks on (the bootstrap
admin key), as a deployment runs it. schemathesis reads /schema/openapi.json and sends what
the schema allows and what it forbids: a 5xx, a status or body the schema does not document,
a valid request refused or an invalid one accepted each fail the run. `/saq` and the docs
are not in the schema (tests/integration/test_api.py checks), so they are not fuzzed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import APP, VENV_BIN, Running, Servers, app_env, free_port, migrate
from tests.support.access import BOOTSTRAP_KEY, auth_settings

# Per operation and phase: enough to reach every documented answer, bounded so the whole run
# stays within a minute or two on two cores.
MAX_EXAMPLES = 60
RUN_WITHIN = 240  # seconds; only stops a hung run, before pytest's own timeout


def test_schemathesis_finds_nothing_in_any_phase(
    servers: Servers, fresh_database_url: str, processes: list[Running], tmp_path: Path
) -> None:
    migrate(fresh_database_url)
    settings = auth_settings(fresh_database_url, servers.redis_url)
    port = free_port()
    command = [str(VENV_BIN / "uvicorn"), "--factory", APP, "--port", str(port)]
    # The event streams (`text/event-stream`) last a moment here, not an hour: schemathesis
    # reads each answer to its end.
    env = app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, EVENTS_MAX_STREAM_SECONDS="0.2")
    api = Running(command, env, "api")
    processes.append(api)
    api.wait_for_line(lambda line: "Application startup complete" in line)

    run = subprocess.run(
        [
            str(VENV_BIN / "st"),
            "run",
            f"http://127.0.0.1:{port}/schema/openapi.json",
            "--checks=all",
            "--phases=examples,coverage,fuzzing,stateful",
            f"--max-examples={MAX_EXAMPLES}",
            # The same cases on every run (and no example database): a failure reproduces.
            "--generation-deterministic",
            # One worker: with two, the coverage phase's threads hit a CPython 3.11.7 bug in
            # `ast` ("AST constructor recursion depth mismatch"), an error of the tool's own.
            "--workers=1",
            "--request-timeout=10",
            "--no-color",
            f"--header=Authorization: Bearer {BOOTSTRAP_KEY}",
        ],
        cwd=tmp_path,  # anything schemathesis writes stays out of the repository
        capture_output=True,
        text=True,
        timeout=RUN_WITHIN,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{output}\n{api.tail(60)}"
    assert "No issues found" in output, output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output  # ran and passed, not skipped

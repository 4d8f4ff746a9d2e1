"""schemathesis against the real API: every phase, every check, and nothing found: with the
admin key, without a key, and in open mode.

The API runs as `uvicorn` on a fresh migrated database with access checks on (the bootstrap
admin key), as a deployment runs it, or in open mode, as `make dev` runs it, with two cron
schedules declared (the test app's) so that pausing and resuming one reach their handler
(schemathesis finds the names through the list's links). schemathesis reads
/schema/openapi.json and sends what the schema allows and what it forbids: a 5xx, a status
or body the schema does not document, a valid request refused or an invalid one accepted
each fail the run. Without a key its
`ignored_auth` check fails any 2xx from an operation that declares the bearer scheme, and the
test then asks every such operation itself: each answers 401 with its documented body. In
open mode the schema declares no key on any operation (none is asked for), so schemathesis'
auth checks hold it to that. `/saq`
and the docs are not in the schema (tests/integration/test_api.py checks), so they are not
fuzzed; the route x role matrix (tests/integration/test_auth_matrix.py) covers them.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema

from tests.support import (
    VENV_BIN,
    Running,
    Servers,
    app_env,
    free_port,
    make_settings,
    migrate,
)
from tests.support.access import BOOTSTRAP_KEY, auth_settings
from tests.support.app import TEST_CRON_APP

# Per operation and phase: enough to reach every documented answer, bounded so both runs
# stay within a minute or two on two cores.
MAX_EXAMPLES = 60
RUN_WITHIN = 240  # seconds; only stops a hung run, before pytest's own timeout
# Any value of the path's parameters: the guard answers before the handler looks the id up.
SOME_ID = "00000000-0000-4000-8000-000000000000"
# The probes answer anyone (docs/security.md); /metrics has its own scrape guard and is not
# in the schema.
UNGUARDED = {("GET", "/health"), ("GET", "/ready")}


def start_api(
    servers: Servers, database_url: str, processes: list[Running], *, open_mode: bool = False
) -> tuple[Running, str]:
    """The API as deployed (checks on, the bootstrap admin key), or in open mode, and its
    base URL."""
    migrate(database_url)
    port = free_port()
    command = [str(VENV_BIN / "uvicorn"), "--factory", TEST_CRON_APP, "--port", str(port)]
    # The event streams (`text/event-stream`) last a moment here, not an hour: schemathesis
    # reads each answer to its end.
    if open_mode:
        settings = make_settings(database_url, servers.redis_url)
        env = app_env(settings, EVENTS_MAX_STREAM_SECONDS="0.2")
    else:
        settings = auth_settings(database_url, servers.redis_url)
        # The coverage phase sends wrong keys on purpose: the failed-key limit (tested on its
        # own) would answer every later case 429 and leave the routes' logic untested.
        env = app_env(
            settings,
            ADMIN_API_KEY=BOOTSTRAP_KEY,
            EVENTS_MAX_STREAM_SECONDS="0.2",
            AUTH_FAILURES_PER_MINUTE="0",
        )
    api = Running(command, env, "api")
    processes.append(api)
    # uvicorn binds its socket after the app's start-up: this line comes once it listens.
    api.wait_for_line(lambda line: "Uvicorn running on" in line)
    return api, f"http://127.0.0.1:{port}"


CONFIG = Path(__file__).parent / "schemathesis.toml"  # the trigger's `after`: see the file


def run_schemathesis(api: Running, base: str, key: str | None, cwd: Path) -> str:
    """`st run` with every phase and check; its output, asserted clean: every case passed
    in every phase."""
    run = subprocess.run(
        [
            str(VENV_BIN / "st"),
            f"--config-file={CONFIG}",
            "run",
            f"{base}/schema/openapi.json",
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
            *([f"--header=Authorization: Bearer {key}"] if key is not None else []),
        ],
        cwd=cwd,  # anything schemathesis writes stays out of the repository
        capture_output=True,
        text=True,
        timeout=RUN_WITHIN,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{output}\n{api.tail(60)}"
    assert re.search(r"(\d+) generated, \1 passed", output), output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output  # ran and passed, not skipped
    return output


def read_schema(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/schema/openapi.json", timeout=10) as response:
        schema: dict[str, Any] = json.loads(response.read())
    return schema


def guarded_operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ "METHOD /path" -> operation, for every operation but the probes; each declares the
    bearer scheme (asserted), which is what lets `ignored_auth` check it."""
    found = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if (method.upper(), path) in UNGUARDED:
                continue
            assert operation.get("security") == [{"BearerAuth": []}], (method, path)
            found[f"{method.upper()} {path}"] = operation
    return found


def call_without_key(base: str, method: str, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{base}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def test_schemathesis_with_the_admin_key_finds_nothing(
    servers: Servers, fresh_database_url: str, processes: list[Running], tmp_path: Path
) -> None:
    api, base = start_api(servers, fresh_database_url, processes)
    output = run_schemathesis(api, base, BOOTSTRAP_KEY, tmp_path)
    assert "No issues found" in output, output
    assert "Authentication failed" not in output, output  # the key reached every operation


def test_schemathesis_without_a_key_finds_nothing_but_401s(
    servers: Servers, fresh_database_url: str, processes: list[Running], tmp_path: Path
) -> None:
    api, base = start_api(servers, fresh_database_url, processes)
    output = run_schemathesis(api, base, None, tmp_path)
    # schemathesis's own summary: operations that only ever answered 401 (a malformed id in
    # the path can be refused with a 400 before the guard runs, which is fine).
    refused = re.search(r"401 Unauthorized \(\d+ operations\):\n((?:  - .*\n)+)", output)
    assert refused is not None, output
    listed = {line.removeprefix("  - ") for line in refused.group(1).splitlines()}
    assert listed <= set(guarded_operations(read_schema(base))), output


def test_every_guarded_operation_answers_401_with_its_documented_body(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    _, base = start_api(servers, fresh_database_url, processes)
    schema = read_schema(base)
    for name, operation in guarded_operations(schema).items():
        method, path = name.split(" ")
        documented = operation["responses"].get("401")
        assert documented is not None, f"{name} documents no 401"
        status, body = call_without_key(
            base, method, path.format(job_id=SOME_ID, key_id=SOME_ID, name="nightly_report")
        )
        assert status == 401, (name, status, body)
        answer = json.loads(body)
        body_schema = documented["content"]["application/json"]["schema"]
        jsonschema.validate(answer, {**body_schema, "components": schema["components"]})
        assert answer["status_code"] == 401, (name, answer)


def test_schemathesis_in_open_mode_finds_nothing(
    servers: Servers, fresh_database_url: str, processes: list[Running], tmp_path: Path
) -> None:
    """Open mode answers without a key: its schema must not say one is needed."""
    api, base = start_api(servers, fresh_database_url, processes, open_mode=True)
    schema = read_schema(base)
    declared = [
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    ]
    assert declared == [], declared
    assert "securitySchemes" not in schema.get("components", {})
    output = run_schemathesis(api, base, None, tmp_path)
    # Every case passed (run_schemathesis). Its one warning: no key is made in open mode
    # (docs/security.md), so a key's revoke only ever finds none (404, documented).
    if "No issues found" not in output:
        missing = re.search(r"Missing test data: .*?\n\n((?:  - .*\n)+)", output)
        assert missing is not None, output
        assert missing.group(1).split() == ["-", "POST", "/api/v1/keys/{key_id}/revoke"], output

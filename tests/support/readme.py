"""The README's own commands (its curl, its psql query), run as written against a port."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
import urllib.request
from typing import Any

from tests.support.processes import Running
from tests.support.servers import ROOT

SEED_QUERY = "SELECT * FROM background_jobs ORDER BY created_at DESC LIMIT 1;"


def readme_block_after(marker: str) -> str:
    """The first fenced block after `marker` in the README."""
    readme = (ROOT / "README.md").read_text()
    after = readme.split(marker, 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", after, flags=re.S)
    assert block is not None, marker
    return textwrap.dedent(block.group(1)).strip()


def run_readme_curl(port: int, body: str | None = None) -> dict[str, Any]:
    command = readme_block_after("2. Trigger a test task:").replace(
        "localhost:8000", f"localhost:{port}"
    )
    if body is not None:
        command = re.sub(r"-d '.*'", f"-d '{body}'", command)
    out = subprocess.run(
        ["bash", "-c", command + ' -sS -w "\\n%{http_code}"'],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    payload, status = out.rsplit("\n", 1)
    assert status == "202", out
    result: dict[str, Any] = json.loads(payload)
    return result


def run_readme_psql(database_url: str) -> str:
    command = readme_block_after("5. Verify the job record in the database.")
    assert SEED_QUERY in command
    command = re.sub(r'psql "[^"]+"', f'psql "{database_url}"', command)
    return subprocess.run(
        ["bash", "-c", command], check=True, capture_output=True, text=True
    ).stdout


def wait_until_up(port: int, make_dev: Running) -> None:
    """`make dev` said it is up, and the API answers /health."""
    make_dev.wait_for_line(lambda line: "Ctrl-C stops everything" in line, within=180)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)

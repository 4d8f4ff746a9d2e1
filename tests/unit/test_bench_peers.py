"""`make bench-peers`: its packages stay out of the default install, and its table says what
each system answered."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from bench.peers.report import markdown, summarise

ROOT = Path(__file__).resolve().parents[2]
PEERS = {"procrastinate", "celery", "psycopg"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_the_default_install_leaves_the_peers_group_out() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = pyproject["dependency-groups"]
    assert {_name(r) for r in groups["peers"]} >= PEERS
    assert pyproject["tool"]["uv"]["default-groups"] == ["dev"]
    everything_installed = [*pyproject["project"]["dependencies"], *groups["dev"]]
    assert not PEERS & {_name(r) for r in everything_installed}


def test_the_lock_holds_the_peers_group_apart_from_dev() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    app = next(p for p in lock["package"] if p["name"] == "app")
    assert {d["name"] for d in app["dev-dependencies"]["peers"]} >= PEERS
    assert not PEERS & {d["name"] for d in app["dev-dependencies"]["dev"]}


def test_only_the_bench_peers_target_installs_the_group_and_into_a_venv_of_its_own() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipes = re.findall(r"^([a-z-]+):[^\n]*\n((?:\t[^\n]*\n)+)", makefile, flags=re.MULTILINE)
    with_group = [target for target, recipe in recipes if "--group peers" in recipe]
    assert with_group == ["bench-peers"]
    recipe = dict(recipes)["bench-peers"]
    assert "UV_PROJECT_ENVIRONMENT=.local/peers-venv" in recipe
    assert "--no-default-groups" in recipe


def _run(jobs_s: float, answers: bool, capped: bool = False) -> dict[str, Any]:
    return {
        "jobs_s": jobs_s,
        "jobs_done": 90 if capped else 100,
        "capped": capped,
        "worker_cpu_ms_per_job": 1.0,
        "postgres_cpu_ms_per_job": 0.5,
        "redis_cpu_ms_per_job": 0.1,
        "job_x": {"answers_after_an_hour": answers, "fact": "what was read", "checked": "how"},
    }


def test_the_table_has_each_system_s_median_and_its_answer_about_job_x() -> None:
    results = {
        "jobs": 100,
        "concurrency": 10,
        "rounds": 3,
        "max_seconds": 40.0,
        "machine": "a CPU, 2 cores",
        "command": "make bench-peers",
        "postgres_settings": {
            "server_version": "15",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
        },
        "redis_settings": {"redis_version": "7", "appendonly": "yes", "appendfsync": "everysec"},
        "systems": {
            "plain_saq": summarise([_run(900, False), _run(1000, False), _run(1100, False)]),
            "celery_threads": summarise([_run(30, True, capped=True), _run(20, True)]),
        },
    }
    table = markdown(results)
    assert "| plain SAQ | 1,000 | 1.00 | 0.50 | 0.10 | no: what was read |" in table
    assert "| Celery, threads 10 (1 of 2 runs stopped at 40 s) | 25 |" in table
    assert "yes: what was read" in table
    assert "fsync on, synchronous_commit on, full_page_writes on" in table
    assert "| Procrastinate |" not in table  # a system not run has no row

"""Medians of the rounds, and the Markdown table of `make bench-peers`."""

from __future__ import annotations

from typing import Any

from bench.common import median, rounded

LABELS = {
    "plain_saq": "plain SAQ",
    "tracked": "this project (tracked worker)",
    "procrastinate": "Procrastinate",
    "celery_prefork": "Celery, prefork 2",
    "celery_threads": "Celery, threads 10",
}
FIGURES = ("jobs_s", "worker_cpu_ms_per_job", "postgres_cpu_ms_per_job", "redis_cpu_ms_per_job")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's median figures over its runs, and its answer about job X."""
    answers = {run["job_x"]["answers_after_an_hour"] for run in runs}
    return {
        **{name: rounded(median([run[name] for run in runs]), 3) for name in FIGURES},
        "jobs_done": min(run["jobs_done"] for run in runs),
        "capped_runs": sum(1 for run in runs if run.get("capped")),
        "answers_job_x_after_an_hour": answers == {True},
        "job_x": runs[-1]["job_x"],
        "runs": runs,
    }


def markdown(results: dict[str, Any]) -> str:
    systems: dict[str, Any] = results["systems"]
    pg, rd = results["postgres_settings"], results["redis_settings"]
    lines = [
        f"{results['jobs']:,} no-op jobs at concurrency {results['concurrency']}, median of "
        f"{results['rounds']} alternated rounds; PostgreSQL {pg['server_version']} (fsync "
        f"{pg['fsync']}, synchronous_commit {pg['synchronous_commit']}, full_page_writes "
        f"{pg['full_page_writes']}), Redis {rd['redis_version']} (appendonly "
        f"{rd['appendonly']}, appendfsync {rd['appendfsync']}); {results['machine']}.",
        "",
        "| system | jobs/s | worker CPU ms/job | PostgreSQL CPU ms/job | Redis CPU ms/job "
        '| "what happened to job X?" an hour later |',
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, label in LABELS.items():
        if name not in systems:
            continue
        figures = systems[name]
        answer = "yes" if figures["answers_job_x_after_an_hour"] else "no"
        note = f"{answer}: {figures['job_x']['fact']}"
        if figures["capped_runs"]:
            label += (
                f" ({figures['capped_runs']} of {len(figures['runs'])} runs stopped at "
                f"{results['max_seconds']:.0f} s)"
            )
        lines.append(
            f"| {label} | {figures['jobs_s']:,.0f} | {figures['worker_cpu_ms_per_job']:.2f} "
            f"| {figures['postgres_cpu_ms_per_job']:.2f} | {figures['redis_cpu_ms_per_job']:.2f} "
            f"| {note} |"
        )
    lines += [
        "",
        "jobs/s from each system's own timestamps (SAQ: started/completed in Redis; tracked: "
        "the rows; Procrastinate: procrastinate_events; Celery: date_done). CPU per job from "
        "/proc: the worker's process tree, every PostgreSQL process, redis-server. Command: "
        f"`{results['command']}`.",
    ]
    return "\n".join(lines) + "\n"

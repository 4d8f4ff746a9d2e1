"""What the job counters count from the recorder's applied transitions, and how a scrape
renders them, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.metrics import (
    LAST_SUCCESS,
    MAX_EXCEPTION_CLASSES,
    RECONCILER,
    RETENTION,
    JobMetrics,
    exception_class,
)
from app.ops.collector import counter_families, last_success_family

START = datetime(2026, 1, 1, tzinfo=UTC)


def ended(status: JobStatus, seconds: float, error: str | None = None) -> Transition:
    return Transition(
        uuid4(), "send_email", status, 1,
        started_at=START, completed_at=START + timedelta(seconds=seconds), error=error,
    )  # fmt: skip


def counts(metrics: JobMetrics) -> dict[tuple[str, ...], float]:
    return dict(metrics._counts)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("ValueError: bad input", "ValueError"),
        ("TestTaskFailure", "TestTaskFailure"),
        ("swept: the job's worker stopped responding while it ran", "swept"),
        ("worker lost: abc stopped reporting while running the job", "worker lost"),
        ("{'not': 'a class'}: x", "other"),
    ],
)
def test_the_exception_class_is_the_errors_first_word(error: str, expected: str) -> None:
    assert exception_class(error) == expected


def test_final_transitions_count_finished_failures_and_run_time() -> None:
    metrics = JobMetrics(None, "q")  # type: ignore[arg-type]  # counting needs no Redis
    running = Transition(uuid4(), "send_email", JobStatus.RUNNING, 1, started_at=START)
    retrying = Transition(uuid4(), "send_email", JobStatus.QUEUED, 1, error="TimeoutError")
    metrics.applied(
        [
            running,
            retrying,
            ended(JobStatus.COMPLETE, 0.2),
            ended(JobStatus.FAILED, 3, error="ValueError: no"),
            ended(JobStatus.ABORTED, 1, error="cancelled by API request"),
        ]
    )
    assert counts(metrics) == {
        ("attempt_failures", "send_email", "TimeoutError"): 1,
        ("attempt_failures", "send_email", "ValueError"): 1,
        ("finished", "send_email", "complete"): 1,
        ("finished", "send_email", "failed"): 1,
        ("finished", "send_email", "aborted"): 1,
        ("run_seconds_bucket", "send_email", "3"): 1,  # 0.2 s: the bucket up to 0.25 s
        ("run_seconds_bucket", "send_email", "5"): 1,  # 1 s
        ("run_seconds_bucket", "send_email", "7"): 1,  # 3 s: up to 5 s
        ("run_seconds_sum", "send_email"): pytest.approx(4.2),
    }


def test_exception_classes_past_the_limit_are_counted_as_other() -> None:
    metrics = JobMetrics(None, "q")  # type: ignore[arg-type]
    errors = [f"Error{n}: x" for n in range(MAX_EXCEPTION_CLASSES + 5)]
    metrics.applied([ended(JobStatus.FAILED, 1, error) for error in errors])
    failures = {key: n for key, n in counts(metrics).items() if key[0] == "attempt_failures"}
    assert len(failures) == MAX_EXCEPTION_CLASSES + 1
    assert failures[("attempt_failures", "send_email", "other")] == 5


def scrape(samples: dict[tuple[str, ...], float]) -> dict[tuple[str, frozenset[Any]], float]:
    class Families:
        def collect(self) -> Any:
            return [*counter_families("q", samples), last_success_family("q", samples)]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_scrape_renders_counters_and_cumulative_buckets() -> None:
    rendered = scrape(
        {
            ("enqueued", "send_email"): 3,
            ("finished", "send_email", "complete"): 2,
            ("run_seconds_bucket", "send_email", "0"): 1,
            ("run_seconds_bucket", "send_email", "3"): 1,
            ("run_seconds_sum", "send_email"): 0.21,
            ("a_metric_of_a_later_version", "x"): 9,  # ignored, not an error
        }
    )
    task = {("queue", "q"), ("task", "send_email")}
    assert rendered[("bgjobs_enqueued_total", frozenset(task))] == 3
    assert rendered[("bgjobs_finished_total", frozenset({*task, ("status", "complete")}))] == 2
    bucket = "bgjobs_run_seconds_bucket"
    assert rendered[(bucket, frozenset({*task, ("le", "0.01")}))] == 1
    assert rendered[(bucket, frozenset({*task, ("le", "0.1")}))] == 1
    assert rendered[(bucket, frozenset({*task, ("le", "0.25")}))] == 2
    assert rendered[(bucket, frozenset({*task, ("le", "+Inf")}))] == 2
    assert rendered[("bgjobs_run_seconds_count", frozenset(task))] == 2
    assert rendered[("bgjobs_run_seconds_sum", frozenset(task))] == pytest.approx(0.21)


def test_passes_of_the_maintenance_loops_are_counted_with_the_last_success() -> None:
    metrics = JobMetrics(None, "q")  # type: ignore[arg-type]
    metrics.pass_made(RECONCILER, succeeded=False)
    metrics.pass_made(RECONCILER, succeeded=True)
    metrics.pass_made(RECONCILER, succeeded=True)
    assert counts(metrics) == {
        ("maintenance_passes", RECONCILER, "failed"): 1,
        ("maintenance_passes", RECONCILER, "succeeded"): 2,
    }
    assert set(metrics._succeeded) == {RECONCILER}  # a failed pass sets no time


def test_every_loops_passes_are_rendered_from_zero_and_its_last_success_as_a_gauge() -> None:
    rendered = scrape(
        {("maintenance_passes", RETENTION, "failed"): 2, (LAST_SUCCESS, RETENTION): 1.7e9}
    )
    passes = {
        (labels["loop"], labels["outcome"]): count
        for (name, labelset), count in rendered.items()
        if name == "bgjobs_maintenance_passes_total"
        for labels in [dict(labelset)]
    }
    # Present before their first pass: `increase()` then sees the first failure.
    assert passes == {
        (RECONCILER, "succeeded"): 0,
        (RECONCILER, "failed"): 0,
        (RETENTION, "succeeded"): 0,
        (RETENTION, "failed"): 2,
    }
    name = "bgjobs_maintenance_last_success_timestamp_seconds"
    assert rendered == {
        **{key: n for key, n in rendered.items() if key[0] != name},
        (name, frozenset({("queue", "q"), ("loop", RETENTION)})): 1.7e9,
    }

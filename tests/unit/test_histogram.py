"""Durations in log-spaced buckets: a percentile read from the counts is within the documented
bound of PostgreSQL's `percentile_cont` over the durations themselves."""

from __future__ import annotations

import math
import random

import pytest

from app.jobs.histogram import (
    BUCKETS,
    HIGHEST,
    LOWEST,
    RATIO,
    RELATIVE_ERROR,
    bucket_of,
    middle,
    percentile,
)


def percentile_cont(values: list[float], p: float) -> float:
    """PostgreSQL's `percentile_cont`: linear between the neighbouring order statistics."""
    ordered = sorted(values)
    rank = p * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def counts_of(values: list[float]) -> list[int]:
    counts = [0] * BUCKETS
    for value in values:
        counts[bucket_of(value)] += 1
    return counts


def within_bound(estimate: float, exact: float) -> bool:
    """The documented bound: a factor 2^(1/8) either way, give or take LOWEST / 2."""
    slack = 1e-9
    factor = math.sqrt(RATIO)
    return exact / factor - LOWEST / 2 - slack <= estimate <= exact * factor + LOWEST / 2 + slack


def test_the_buckets_cover_a_tenth_of_a_millisecond_to_thirty_hours() -> None:
    assert (BUCKETS, round(RELATIVE_ERROR, 4), round(HIGHEST / 3600, 1)) == (122, 0.0905, 29.8)
    assert bucket_of(-1.0) == bucket_of(0.0) == bucket_of(LOWEST * 0.99) == 0
    assert bucket_of(LOWEST) == 1
    assert bucket_of(LOWEST * 2) == 1 + 4  # four buckets per doubling
    assert bucket_of(HIGHEST * 10) == BUCKETS - 1
    for bucket in range(1, BUCKETS - 1):  # each middle is inside its bucket
        assert bucket_of(middle(bucket)) == bucket


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("p", [0.5, 0.95])
def test_a_percentile_of_the_counts_is_within_the_bound_of_percentile_cont(
    seed: int, p: float
) -> None:
    draw = random.Random(seed)
    size = draw.choice([1, 2, 3, 10, 100, 1000])
    spread = draw.choice([(LOWEST, 0.01), (0.001, 1.0), (0.05, 7200.0), (0.0, LOWEST * 3)])
    values = [
        math.exp(draw.uniform(math.log(max(spread[0], 1e-6)), math.log(spread[1])))
        for _ in range(size)
    ]
    estimate = percentile(counts_of(values), p)
    assert estimate is not None
    assert within_bound(estimate, percentile_cont(values, p)), (values, estimate)


def test_the_bound_is_tight_for_a_value_at_a_buckets_edge() -> None:
    edge = LOWEST * RATIO**10 * (1 + 1e-9)  # at the bottom of bucket 11
    assert bucket_of(edge) == 11
    estimate = percentile(counts_of([edge]), 0.5)
    assert estimate == pytest.approx(edge * math.sqrt(RATIO))  # its middle: sqrt(r) above


def test_no_durations_no_percentile() -> None:
    assert percentile([0] * BUCKETS, 0.5) is None

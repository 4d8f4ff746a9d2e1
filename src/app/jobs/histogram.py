"""Durations counted in fixed, log-spaced buckets, so that percentiles of any window come from
summed counts instead of the window's rows (`job_stats`: app/jobs/record/counting.py).

Bucket 0 holds durations under `LOWEST` (0.1 ms, and negative ones: clocks of two hosts);
bucket i (1..120) holds [LOWEST * r^(i-1), LOWEST * r^i) with r = 2^(1/4), four buckets per
doubling, up to LOWEST * 2^30 (29.8 hours); bucket 121 holds the longer ones.

A percentile is read the way PostgreSQL's `percentile_cont` reads it: at rank p * (n - 1)
between the two neighbouring order statistics, linearly, except that each order statistic
is replaced by the geometric middle of its bucket. Each middle is within a factor sqrt(r) =
2^(1/8) of the value it stands for, and a linear mix keeps that factor, so for durations
between 0.1 ms and 29.8 h the estimate is within -8.3 % and +9.05 % of `percentile_cont`'s
(`RELATIVE_ERROR`); under 0.1 ms it is 0.05 ms (within 0.05 ms of any value from 0 to 0.1
ms); past 29.8 h it is 29.8 h. A leaf: imports nothing from `app`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LOWEST = 1e-4  # seconds: the lower bound of bucket 1
PER_DOUBLING = 4
DOUBLINGS = 30
BUCKETS = PER_DOUBLING * DOUBLINGS + 2  # 0: below LOWEST; 1..120; 121: the rest
RATIO = 2.0 ** (1 / PER_DOUBLING)
RELATIVE_ERROR = math.sqrt(RATIO) - 1  # 0.0905: the estimate against percentile_cont
HIGHEST = LOWEST * 2.0**DOUBLINGS  # seconds: 29.8 hours

# `job_stats`'s columns: one count per bucket of each duration, NULL for none (a NULL costs
# a bit of the row's null bitmap, a count four bytes), so a window's percentiles are sums
# of columns over its rows, whatever the number of jobs.
RUN_COLUMNS = [f"run_{i:03d}" for i in range(BUCKETS)]
WAIT_COLUMNS = [f"wait_{i:03d}" for i in range(BUCKETS)]


def bucket_of(seconds: float) -> int:
    if seconds < LOWEST:
        return 0
    return min(BUCKETS - 1, 1 + math.floor(PER_DOUBLING * math.log2(seconds / LOWEST)))


def bucket_sql(seconds: str) -> str:
    """SQL for `bucket_of` of a float8 expression (NULL for NULL)."""
    return (
        f"CASE WHEN {seconds} IS NULL THEN NULL WHEN {seconds} < {LOWEST} THEN 0 "
        f"ELSE least({BUCKETS - 1}, 1 + "
        f"floor({PER_DOUBLING} * ln({seconds} / {LOWEST}) / ln(2))::integer) END"
    )


def middle(bucket: int) -> float:
    """The value a bucket stands for: its geometric middle."""
    if bucket == 0:
        return LOWEST / 2
    if bucket == BUCKETS - 1:
        return HIGHEST
    return float(LOWEST * RATIO ** (bucket - 0.5))


def percentile(counts: Sequence[int], p: float) -> float | None:
    """The p-th quantile (0..1) of the durations `counts` holds (one count per bucket), read
    as `percentile_cont` reads it (see the module's docstring); None for no durations."""
    total = sum(counts)
    if total == 0:
        return None
    rank = p * (total - 1)
    below, fraction = int(rank), rank - int(rank)
    low, high = _at_rank(counts, below), _at_rank(counts, min(below + 1, total - 1))
    return low + fraction * (high - low)


def _at_rank(counts: Sequence[int], rank: int) -> float:
    """The middle of the bucket holding the `rank`-th smallest duration (from 0)."""
    seen = 0
    for bucket, count in enumerate(counts):
        seen += count
        if seen > rank:
            return middle(bucket)
    raise ValueError(f"rank {rank} past {seen} durations")

"""Process-wide tuning applied once a process has started (the API and every worker)."""

from __future__ import annotations

import gc

# Young collections wait for this many new objects instead of Python's 700 (docs/benchmarks.md).
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Keep the garbage collector's pauses short and rare; call it once start-up is done.

    What start-up built (Litestar, its OpenAPI model, SQLAlchemy's mappers) lives as long as
    the process: frozen, a full collection no longer walks it while every request waits.
    The requests in flight alone cross the default young-generation threshold every few
    milliseconds; with the higher one the collector runs when garbage piles up.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)

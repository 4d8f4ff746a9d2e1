"""Small SVG charts drawn on the server: no chart library, nothing for the page to run.

Shapes carry the meaning, not colour alone: completed jobs rise above the axis, failed ones
hang below it; each bar has a `<title>` that says what it is in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any
from uuid import UUID

from markupsafe import Markup

from app.monitor.views import duration, seconds_between

MINUTES = 60
_BAR, _GAP, _HALF = 5, 1, 40  # px: bar width, gap, height of each half of the outcome chart


def outcome_chart(minutes: Sequence[Mapping[Any, Any]], since: datetime) -> Markup:
    """Completed (up) and failed (down) jobs per minute for the hour after `since`."""
    start = since.replace(second=0, microsecond=0)
    by_minute = {int((row["minute"] - start) / timedelta(minutes=1)): row for row in minutes}
    peak = max([1, *(max(row["complete"], row["failed"]) for row in minutes)])
    width = (MINUTES + 1) * (_BAR + _GAP)
    parts = []
    for index in range(MINUTES + 1):
        row = by_minute.get(index)
        if row is None:
            continue
        x = index * (_BAR + _GAP)
        at = (start + timedelta(minutes=index)).strftime("%H:%M")
        for count, kind, up in (
            (row["complete"], "complete", True),
            (row["failed"], "failed", False),
        ):
            if not count:
                continue
            height = max(2, round(_HALF * count / peak))
            y = _HALF - height if up else _HALF + 1
            parts.append(
                f'<rect class="bar-{kind}" x="{x}" y="{y}" width="{_BAR}" height="{height}">'
                f"<title>{at}: {count} {kind}</title></rect>"
            )
    total_ok = sum(row["complete"] for row in minutes)
    total_failed = sum(row["failed"] for row in minutes)
    label = (
        f"Per minute over the last hour: {total_ok} completed (above), "
        f"{total_failed} failed (below)"
    )
    return Markup(  # noqa: S704 - numbers, and text passed through escape()
        f'<svg class="chart" role="img" viewBox="0 0 {width} {2 * _HALF + 2}" '
        f'width="{width}" height="{2 * _HALF + 2}" preserveAspectRatio="none" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<line class="axis" x1="0" y1="{_HALF + 0.5}" x2="{width}" y2="{_HALF + 0.5}"/>'
        + "".join(parts)
        + "</svg>"
    )


def runs_strip(runs: Sequence[Mapping[Any, Any]], current: UUID) -> Markup:
    """A task's last runs, oldest to newest: a bar per run, its height the run time (log
    scale), its shape the outcome (failed and aborted runs are marked below the line)."""
    if not runs:
        return Markup("")
    times = [seconds_between(run["started_at"], run["completed_at"]) for run in runs]
    longest = max([0.001, *(t for t in times if t is not None)])
    step, height = 10, 36
    parts = []
    for index, (run, seconds) in enumerate(zip(runs, times, strict=True)):
        status = str(run["status"])
        x = index * step
        scaled = math.log1p(seconds * 1000) / math.log1p(longest * 1000) if seconds else 0
        bar = max(3, round(scaled * (height - 4)))
        mark = (
            f'<rect class="mark-{status}" x="{x}" y="{height + 2}" width="8" height="6"/>'
            if status in ("failed", "aborted")
            else ""
        )
        here = " current" if run["job_id"] == current else ""
        title = f"{status}, run time {duration(seconds)}"
        parts.append(
            f'<a href="/monitor/jobs/{run["job_id"]}" aria-label="{escape(title)}">'
            f'<rect class="run run-{status}{here}" x="{x}" y="{height - bar}" width="8" '
            f'height="{bar}"><title>{escape(title)}</title></rect>{mark}</a>'
        )
    width = len(runs) * step
    return Markup(  # noqa: S704 - numbers, and text passed through escape()
        f'<svg class="runs" role="img" viewBox="0 0 {width} {height + 10}" width="{width}" '
        f'height="{height + 10}" aria-label="the task\'s last {len(runs)} runs">'
        f'<line class="axis" x1="0" y1="{height + 0.5}" x2="{width}" y2="{height + 0.5}"/>'
        + "".join(parts)
        + "</svg>"
    )

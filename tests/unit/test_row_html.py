"""The jobs table's rows written in Python (`app.monitor.row_html`) are the rows the Jinja
template wrote before them: the same markup, every value escaped the same way, hostile values
included. The template is kept beside this test (`reference_rows.html`) as the reference."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from jinja2 import Environment

from app.monitor.row_html import rows_html
from app.monitor.views import PageFilters, row_view

# src/app/monitor/templates/rows.html as it was before app/monitor/row_html.py wrote the rows.
REFERENCE = (Path(__file__).parent / "reference_rows.html").read_text()

HOSTILE = "<script>alert('x')</script>\"&amp;"
START = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _row(k: int, **changes: object) -> dict[str, object]:
    return {
        "id": UUID(int=k + 1),
        "job_id": UUID(int=10_000 + k),
        "task_name": "trigger_test",
        "queue": "default",
        "status": "failed",
        "user_id": UUID(int=20_000 + k),
        "project_id": UUID(int=30_000 + k),
        "worker_id": "worker-host-1234",
        "attempts": 1,
        "max_attempts": 3,
        "created_at": START,
        "started_at": START,
        "completed_at": datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC),
        "error": "ValueError: boom",
        **changes,
    }


ROWS = [
    _row(0),
    _row(1, task_name=HOSTILE, worker_id=HOSTILE, error=HOSTILE * 10, status="complete"),
    _row(2, user_id=None, project_id=None, worker_id=None, started_at=None, error=None),
    _row(3, user_id=None, worker_id="w<1>", status="queued"),
    _row(4, project_id=None, worker_id="short"),
]


def _normal(html: str) -> str:
    """Markup without the whitespace between tags, which the two writers lay out differently."""
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", html)).strip()


@pytest.mark.parametrize("operator", [True, False])
@pytest.mark.parametrize(
    "query",
    [
        {},
        {"status": ["failed"], "worker_id": [HOSTILE], "q": ["<b>&"]},
        {"task_name": ["a&b"], "limit": ["25"]},
        {
            "user_id": [str(UUID(int=20_000))],
            "status": ["failed,complete"],
            "project_id": [str(UUID(int=1))],
        },
    ],
)
def test_rows_are_the_templates_rows(operator: bool, query: dict[str, list[str]]) -> None:
    """Catches: a value written unescaped, a link or attribute that differs from the template's."""
    filters = PageFilters.from_query(query)
    views = [row_view(row) for row in ROWS]
    expected = (
        Environment(autoescape=True)
        .from_string(REFERENCE)
        .render(rows=views, filters=filters, operator=operator)
    )
    written = rows_html(views, filters, operator)
    assert _normal(written) == _normal(expected)
    assert "<script>" not in written

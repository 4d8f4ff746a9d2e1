"""What "Retry all… / Cancel all…" on the monitor acts on: the page's filters (its URL) turned
into the bulk API's filter, field by field (app/monitor/actions.py, app/monitor/views.py).
A filter dropped on the way would act on up to 1,000 jobs the page does not show."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest

from app.jobs.lifecycle import JobStatus
from app.jobs.reads.search import SearchError
from app.monitor.actions import job_filter
from app.monitor.views import FILTERS, PageFilters

UNTIL = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
USER = "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f"
PROJECT = "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e80"
# Each filter a page's URL may carry, and what the bulk filter must then hold.
ONE_BY_ONE: dict[str, tuple[str, dict[str, Any]]] = {
    "status": ("failed,aborted", {"status": [JobStatus.ABORTED, JobStatus.FAILED]}),
    "task_name": ("send_mail", {"task_name": "send_mail"}),
    "queue": ("mail", {"queue": "mail"}),
    "worker_id": ("worker-7", {"worker_id": "worker-7"}),
    "user_id": (USER, {"user_id": UUID(USER)}),
    "project_id": (PROJECT, {"project_id": UUID(PROJECT)}),
    "has_error": ("true", {"has_error": True}),
    "q": ("task:send_mail status:failed", {"task_name": "send_mail", "status": [JobStatus.FAILED]}),
}


def bulk_filter(query: dict[str, str]) -> dict[str, Any]:
    search = PageFilters.from_query({name: [value] for name, value in query.items()}).search
    found = msgspec.structs.asdict(job_filter(search, UNTIL))
    return {name: value for name, value in found.items() if value is not msgspec.UNSET}


def test_every_filter_a_page_may_carry_is_covered_here() -> None:
    assert set(ONE_BY_ONE) == set(FILTERS)


@pytest.mark.parametrize("name", list(ONE_BY_ONE))
def test_each_filter_of_the_page_reaches_the_bulk_filter(name: str) -> None:
    value, expected = ONE_BY_ONE[name]
    assert bulk_filter({name: value}) == {**expected, "created_before": UNTIL}


def test_all_filters_together_reach_it_and_nothing_else() -> None:
    query = {name: value for name, (value, _) in ONE_BY_ONE.items() if name != "q"}
    expected: dict[str, Any] = {"created_before": UNTIL}
    for name in query:
        expected.update(ONE_BY_ONE[name][1])
    assert bulk_filter(query) == expected


@pytest.mark.parametrize(
    "query",
    [{"q": 'error:"timeout"'}, {"q": "args.to:ann"}, {"q": "sendm"}, {"q": "task:a task:b"}],
)
def test_a_filter_the_bulk_api_cannot_express_is_refused_not_dropped(query: dict[str, str]) -> None:
    with pytest.raises(SearchError):
        bulk_filter(query)

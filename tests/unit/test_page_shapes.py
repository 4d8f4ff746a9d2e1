"""A page statement built once per shape of search (`app.jobs.reads.shapes`) is, with a
request's values bound, the statement built for that request alone."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from app.jobs.lifecycle import JobStatus
from app.jobs.reads.queries import page_statement
from app.jobs.reads.search import JobSearch, Position
from app.jobs.reads.shapes import PageStatements

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _sql(statement: Select[object]) -> str:
    return str(
        statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})  # type: ignore[no-untyped-call]
    )


def _search(k: int) -> JobSearch:
    """Searches of one shape whose values all depend on `k`."""
    return JobSearch(
        statuses=frozenset({JobStatus.FAILED, JobStatus.ABORTED}),
        task_names=(f"task_{k}",),
        worker_ids=(f"worker-{k}", f"worker-{k + 1}"),
        user_ids=(UUID(int=k),),
        project_ids=(UUID(int=1000 + k),),
        created_after=DAY.replace(day=1 + k),
        created_before=DAY.replace(day=10 + k),
        has_error=True,
    )


@pytest.mark.parametrize("after", [None, Position(DAY.replace(hour=5), UUID(int=77))])
def test_each_request_binds_its_own_values(after: Position | None) -> None:
    """Catches: a cached statement that keeps the first request's values (another user's
    jobs in the page), or a value bound to the wrong placeholder."""
    statements = PageStatements()
    built = []
    for k in range(3):
        search = _search(k)
        at = None if after is None else Position(after.created_at, UUID(int=after.id.int + k))
        statement, values = statements.page(search, after=at, limit=50, offset=0)
        built.append(statement)
        alone = page_statement(search, after=at, limit=50, offset=0)
        assert _sql(statement.params(values)) == _sql(alone)
    assert built[0] is built[1] is built[2], "one statement for the shape"


def test_a_new_shape_is_a_new_statement() -> None:
    statements = PageStatements()
    one, _ = statements.page(_search(1), after=None, limit=50, offset=0)
    fewer, _ = statements.page(JobSearch(task_names=("a",)), after=None, limit=50, offset=0)
    other_page, _ = statements.page(_search(1), after=None, limit=20, offset=0)
    after = Position(DAY, UUID(int=5))
    next_page, values = statements.page(_search(1), after=after, limit=50, offset=0)
    assert len({id(one), id(fewer), id(other_page), id(next_page)}) == 4
    alone = page_statement(_search(1), after=after, limit=50, offset=0)
    assert _sql(next_page.params(values)) == _sql(alone)


def test_text_terms_are_built_for_each_request() -> None:
    statements = PageStatements()
    search = JobSearch(words=("timeout",), error_texts=("boom",))
    statement, values = statements.page(search, after=None, limit=50, offset=0)
    assert values == {}
    assert _sql(statement) == _sql(page_statement(search, after=None, limit=50, offset=0))

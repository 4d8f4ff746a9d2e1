"""The list's page statements, built once per shape of search and run with its values.

Building a page's statement (its index legs, keyset, capped count) and deriving SQLAlchemy's
cache key from it cost a list request more API CPU than running it (docs/benchmarks.md).
Two searches of one shape (the same statuses, the same number of each filter's values,
the same bounds, page size and offset) differ only in values: the statement is built once
with named placeholders of the columns' types, and each request binds its own values. A
search with text or argument terms is built as before (its terms become LIKE patterns and
JSON documents inside the statement).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import BindParameter, Select, bindparam
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from app.jobs.reads.queries import JOBS, page_statement
from app.jobs.reads.search import JobSearch, Position

# A search's filters of many values, by the column each compares with.
_LISTS = {
    "task_names": "task_name",
    "queues": "queue",
    "worker_ids": "worker_id",
    "user_ids": "user_id",
    "project_ids": "project_id",
}
_BOUNDS = ("created_after", "created_before")
_KEPT = 256  # shapes remembered; a request seldom brings a new one
_ASYNCPG = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A shape's statement compiled for asyncpg's placeholders ($1, $2): run through the
    driver, it skips the session and SQLAlchemy's row processing (docs/benchmarks.md)."""

    sql: str
    names: tuple[str, ...]  # the placeholders' names, in order
    fixed: dict[str, Any]  # the values the statement carries (statuses, limit, offset)

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] if name in values else self.fixed[name] for name in self.names]


def _for_driver(statement: Select[Any], values: dict[str, Any]) -> DriverStatement | None:
    compiled = statement.compile(dialect=_ASYNCPG)
    sql = str(compiled)
    if "POSTCOMPILE" in sql or compiled.positiontup is None:  # values expanded per request
        return None
    carried = compiled.construct_params(values).items()
    fixed = {name: value for name, value in carried if name not in values}
    return DriverStatement(sql, tuple(compiled.positiontup), fixed)


def _placeholder(name: str, column: str) -> BindParameter[Any]:
    return bindparam(f"shape_{name}", type_=JOBS.c[column].type)


def _shape(
    search: JobSearch, after: Position | None, limit: int, offset: int
) -> tuple[Any, ...] | None:
    if search.scans_text:
        return None
    return (
        search.statuses,
        search.has_error,
        *(len(getattr(search, name)) for name in _LISTS),
        *(getattr(search, name) is None for name in _BOUNDS),
        after is None,
        limit,
        offset,
    )


def _placeholders(search: JobSearch, after: Position | None) -> tuple[JobSearch, Position | None]:
    """`search` and `after` with each value replaced by its named placeholder."""
    lists: dict[str, Any] = {
        name: tuple(_placeholder(f"{name}_{k}", column) for k in range(len(getattr(search, name))))
        for name, column in _LISTS.items()
    }
    bounds: dict[str, Any] = {
        name: None if getattr(search, name) is None else _placeholder(name, "created_at")
        for name in _BOUNDS
    }
    held = replace(search, **lists, **bounds)
    if after is None:
        return held, None
    at: Any = _placeholder("after_created_at", "created_at")
    row_id: Any = _placeholder("after_id", "id")
    return held, Position(at, row_id)


def _values(search: JobSearch, after: Position | None) -> dict[str, Any]:
    values = {
        f"shape_{name}_{k}": value
        for name in _LISTS
        for k, value in enumerate(getattr(search, name))
    }
    values.update(
        {f"shape_{name}": getattr(search, name) for name in _BOUNDS if getattr(search, name)}
    )
    if after is not None:
        values.update(shape_after_created_at=after.created_at, shape_after_id=after.id)
    return values


class PageStatements:
    """The process's page statements by shape (see the module's docstring)."""

    def __init__(self) -> None:
        self._built: dict[tuple[Any, ...], Select[Any]] = {}
        self._driver: dict[tuple[Any, ...], DriverStatement | None] = {}

    def page(
        self, search: JobSearch, *, after: Position | None, limit: int, offset: int
    ) -> tuple[Select[Any], dict[str, Any]]:
        """The statement of this page and the values to run it with."""
        shape = _shape(search, after, limit, offset)
        if shape is None:
            return page_statement(search, after=after, limit=limit, offset=offset), {}
        statement = self._built.get(shape)
        if statement is None:
            if len(self._built) >= _KEPT:
                self._built.clear()
                self._driver.clear()
            held, held_after = _placeholders(search, after)
            statement = page_statement(held, after=held_after, limit=limit, offset=offset)
            self._built[shape] = statement
        return statement, _values(search, after)

    def for_driver(
        self, search: JobSearch, *, after: Position | None, limit: int, offset: int
    ) -> tuple[DriverStatement, list[Any]] | None:
        """This page's statement for the driver and its arguments; None: a search built per
        request (text or argument terms)."""
        shape = _shape(search, after, limit, offset)
        if shape is None:
            return None
        statement, values = self.page(search, after=after, limit=limit, offset=offset)
        if shape not in self._driver:
            self._driver[shape] = _for_driver(statement, values)
        driver = self._driver[shape]
        return None if driver is None else (driver, driver.arguments(values))


PAGE_STATEMENTS = PageStatements()

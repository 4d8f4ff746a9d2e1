"""Plans of the app's statements, as PostgreSQL would run them: `EXPLAIN (FORMAT JSON)`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import ClauseElement, Executable
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <statement>`, compiled with the statement's own parameters."""

    inherit_cache = False

    def __init__(self, statement: Any, *, analyze: bool = False) -> None:
        self.statement = statement
        self.analyze = analyze


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    options = "ANALYZE, FORMAT JSON" if element.analyze else "FORMAT JSON"
    return f"EXPLAIN ({options}) " + compiler.process(element.statement, **kw)


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)

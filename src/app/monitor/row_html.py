"""The jobs table's rows as HTML, written in Python rather than by the template.

A page has up to 200 rows of about twenty values each; Jinja escaped each value through its
own call and looked up each attribute and link through its runtime, which made rendering the
rows the larger part of a jobs page's API CPU (docs/benchmarks.md). Here each row is one
format string; free text is escaped by the same `markupsafe.escape` the template's
autoescaping used, and each link of the page's filters is built and escaped once a page.
The markup is the one `rows.html` wrote (tests/browser read it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote_plus, urlencode

from markupsafe import Markup, escape

from app.monitor.views import DEFAULT_PAGE_SIZE, JobRow, PageFilters

_PICK = (
    '<td class="pick"><input type="checkbox" class="pick-row" value="{id}"'
    ' aria-label="select job {id}"></td>'
)
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")  # the characters quote_plus keeps (ids, names)
_MUTED = '<span class="muted">—</span>'


class _Links:
    """The page's links that change one filter, each escaped for an attribute once.

    `PageFilters.url(name=value)` keeps the other filters in their order, sets `name` where
    it was (or last) and `limit` after them: the pairs around `name` are encoded and
    escaped once a page, so a row's link is its value (quoted only when it must be).
    """

    def __init__(self, filters: PageFilters | None) -> None:
        self._filters = filters
        self._around: dict[str, tuple[str, str]] = {}
        self._made: dict[tuple[str, str], str] = {}

    def _pairs_around(self, name: str) -> tuple[str, str]:
        """The escaped link up to `name=` and after its value."""
        assert self._filters is not None
        pairs = list(self._filters.given.items())
        at = next((k for k, (key, _) in enumerate(pairs) if key == name), len(pairs))
        after = pairs[at + 1 :]
        if self._filters.limit != DEFAULT_PAGE_SIZE:
            after.append(("limit", str(self._filters.limit)))
        before = urlencode(pairs[:at])
        head = f"/monitor?{before}{'&' if before else ''}{quote_plus(name)}="
        tail = f"&{urlencode(after)}" if after else ""
        return str(escape(head)), str(escape(tail))

    def __call__(self, name: str, value: str) -> str:
        link = self._made.get((name, value))
        if link is None:
            around = self._around.get(name)
            if around is None:
                around = self._around[name] = self._pairs_around(name)
            # What quote_plus leaves as it is has nothing to escape for HTML either.
            quoted = value if _UNQUOTED.fullmatch(value) else str(escape(quote_plus(value)))
            link = self._made[(name, value)] = around[0] + quoted + around[1]
        return link


def _row(row: JobRow, link: _Links, operator: bool) -> str:
    # Ids, status, icon, counts, times and the cursor come from typed columns (UUIDs, the
    # status enum, integers, timestamps, base64): nothing in them to escape. Free text is.
    job_id, status = row.job_id, row.status
    task = str(escape(row.task_name))
    ids = []
    if row.user_id:
        ids.append(
            f'<a class="value mono" href="{link("user_id", row.user_id)}"'
            f' title="only user {row.user_id}">u:{row.user_id[:8]}</a>'
        )
    if row.project_id:
        ids.append(
            f'<a class="value mono" href="{link("project_id", row.project_id)}"'
            f' title="only project {row.project_id}">p:{row.project_id[:8]}</a>'
        )
    if not ids:
        ids.append(_MUTED)
    if row.worker_id:
        more = "…" if len(row.worker_id) > 8 else ""
        worker = (
            f'<a class="value mono" href="{link("worker_id", row.worker_id)}"'
            f' title="only worker {escape(row.worker_id)}">{escape(row.worker_id[:8])}{more}</a>'
        )
    else:
        worker = _MUTED
    pick = _PICK.format(id=job_id) if operator else ""
    return (
        f'<tr id="job-{job_id}" data-job-id="{job_id}" data-status="{status}"'
        f' data-cursor="{row.cursor}">\n  {pick}'
        f'<td data-label="Status"><a class="status status-{status}"'
        f' href="{link("status", status)}" title="only {status} jobs">'
        f'<span class="icon" aria-hidden="true">{row.icon}</span>'
        f' <span class="status-text">{status}</span></a></td>\n'
        f'  <td data-label="Task"><a class="value" href="{link("task_name", row.task_name)}"'
        f' title="only {task} jobs">{task}</a></td>\n'
        f'  <td data-label="Job"><a class="mono" href="/monitor/jobs/{job_id}"'
        f' title="{job_id}">{job_id[:8]}…</a></td>\n'
        f'  <td data-label="User / project" class="ids">\n    {chr(10).join(ids)}\n  </td>\n'
        f'  <td data-label="Worker">{worker}</td>\n'
        f'  <td data-label="Attempts" class="attempts num">{row.attempts}/{row.max_attempts}</td>\n'
        f'  <td data-label="Created" class="nowrap"><time datetime="{row.created_iso}">'
        f"{row.created}</time></td>\n"
        f'  <td data-label="Run time" class="num">{row.run_time}</td>\n'
        f'  <td data-label="Last error" class="error-cell">{escape(row.error)}</td>\n'
        "</tr>\n"
    )


def rows_html(rows: Sequence[JobRow], filters: PageFilters | None, operator: bool) -> Markup:
    """The `<tr>` of each row, for `rows.html` (a template global)."""
    link = _Links(filters)
    return Markup("".join(_row(row, link, operator) for row in rows))  # noqa: S704 (escaped above)

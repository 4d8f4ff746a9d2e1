"""The jobs table's rows as HTML, written in Python rather than by the template.

A page has up to 200 rows of about twenty values each; Jinja escaped each value through its
own call and looked up each attribute and link through its runtime, which made rendering the
rows the larger part of a jobs page's API CPU (docs/benchmarks.md). Here each row is one
format string, every value escaped by the same `markupsafe.escape` the template's
autoescaping used, and a link of the page's filters escaped once per page. The markup is
the one `rows.html` wrote (tests/browser read it).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from app.monitor.views import JobRow, PageFilters

_PICK = (
    '<td class="pick"><input type="checkbox" class="pick-row" value="{id}"'
    ' aria-label="select job {id}"></td>'
)
_MUTED = '<span class="muted">—</span>'


class _Links:
    """The page's links by filter, each escaped for an attribute once."""

    def __init__(self, filters: PageFilters | None) -> None:
        self._filters = filters
        self._made: dict[tuple[str, str], str] = {}

    def __call__(self, name: str, value: str) -> str:
        link = self._made.get((name, value))
        if link is None:
            url = self._filters.url(**{name: value}) if self._filters is not None else ""
            link = self._made[(name, value)] = str(escape(url))
        return link


def _row(row: JobRow, link: _Links, operator: bool) -> str:
    job_id = str(escape(row.job_id))
    status = str(escape(row.status))
    task = str(escape(row.task_name))
    ids = []
    if row.user_id:
        user = str(escape(row.user_id))
        ids.append(
            f'<a class="value mono" href="{link("user_id", row.user_id)}"'
            f' title="only user {user}">u:{escape(row.user_id[:8])}</a>'
        )
    if row.project_id:
        project = str(escape(row.project_id))
        ids.append(
            f'<a class="value mono" href="{link("project_id", row.project_id)}"'
            f' title="only project {project}">p:{escape(row.project_id[:8])}</a>'
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
        f' data-cursor="{escape(row.cursor)}">\n  {pick}'
        f'<td data-label="Status"><a class="status status-{status}"'
        f' href="{link("status", row.status)}" title="only {status} jobs">'
        f'<span class="icon" aria-hidden="true">{escape(row.icon)}</span>'
        f' <span class="status-text">{status}</span></a></td>\n'
        f'  <td data-label="Task"><a class="value" href="{link("task_name", row.task_name)}"'
        f' title="only {task} jobs">{task}</a></td>\n'
        f'  <td data-label="Job"><a class="mono" href="/monitor/jobs/{job_id}"'
        f' title="{job_id}">{escape(row.job_id[:8])}…</a></td>\n'
        f'  <td data-label="User / project" class="ids">\n    {chr(10).join(ids)}\n  </td>\n'
        f'  <td data-label="Worker">{worker}</td>\n'
        f'  <td data-label="Attempts" class="attempts num">'
        f"{escape(row.attempts)}/{escape(row.max_attempts)}</td>\n"
        f'  <td data-label="Created" class="nowrap"><time datetime="{escape(row.created_iso)}">'
        f"{escape(row.created)}</time></td>\n"
        f'  <td data-label="Run time" class="num">{escape(row.run_time)}</td>\n'
        f'  <td data-label="Last error" class="error-cell">{escape(row.error)}</td>\n'
        "</tr>\n"
    )


def rows_html(rows: Sequence[JobRow], filters: PageFilters | None, operator: bool) -> Markup:
    """The `<tr>` of each row, for `rows.html` (a template global)."""
    link = _Links(filters)
    return Markup("".join(_row(row, link, operator) for row in rows))  # noqa: S704 (escaped above)

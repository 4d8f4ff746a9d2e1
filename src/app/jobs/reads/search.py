"""What a job list asks for: its filters, the `q` query language, and the opaque cursor.

`q` is a space-separated list of terms, all of which a job must match:

    status:failed,aborted   task:send_email   queue:default   worker:<id>
    user:<uuid>   project:<uuid>   error:"timed out"   args.order_id:123   args.a.b:"x"
    timeout        a word (or "a phrase") with no qualifier

`args.<key>[.<key>...]:<value>` is JSONB containment on the arguments: a JSON number, `true`,
`false` or `null` as such, a quoted or any other bare value as a string. A word with no
qualifier matches a job whose task name starts with it or whose error contains it (any
case). Text and argument terms are not indexed: the list walks the index the other filters
choose and looks at no more than `SCAN_LIMIT` rows per page (docs/jobs-api.md).

The grammar is written once, as regular expressions: the parser and the OpenAPI `pattern`
are built from the same pieces, so a `q` the schema allows is a `q` the API accepts.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from app.jobs.lifecycle import JobStatus

Q_MAX = 1000  # characters of `q`
SCAN_LIMIT = 10_000  # rows a page with text or argument terms looks at, at most

_STATUS = "(?:{})".format("|".join(status.value for status in JobStatus))
_STATUSES = f"{_STATUS}(?:,{_STATUS})*"
STATUSES_PATTERN = f"^{_STATUSES}$"  # a `status` query value: statuses separated by commas
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_QUOTED = r'"(?:[^"\\\x00]|\\["\\])*"'  # \" and \\ are its only escapes
_VALUE = f'(?:{_QUOTED}|[^ "\\x00]+)'
_KEY = "[A-Za-z0-9_-]+"
_WORD = f'(?:{_QUOTED}|[^ ":\\x00]+)'  # no colon: `foo:bar` is an (unknown) qualifier
_TEXT_QUALIFIERS = ("task", "queue", "worker", "error")
_TERMS = {
    "status": f"status:({_STATUSES})",
    "text": "({}):({})".format("|".join(_TEXT_QUALIFIERS), _VALUE),
    "uuid": f"(user|project):({_UUID})",
    "args": f"args((?:\\.{_KEY})+):({_VALUE})",
    "word": f"({_WORD})",
}
_TERM = "(?:{})".format("|".join(_TERMS.values()))
# The OpenAPI pattern of `q` (ECMA-262 and Python read it alike).
Q_PATTERN = f"^ *(?:{_TERM}(?: +{_TERM})*)? *$"
_TERM_AT = re.compile("|".join(f"(?P<{name}>{term})" for name, term in _TERMS.items()))
_GROUPS = {name: _TERM_AT.groupindex[name] for name in _TERMS}
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,3})?")

# The cursor: base64url of the last row's created_at (microseconds since the epoch, a signed
# 64-bit integer) and its id (16 bytes): always 32 characters.
_CURSOR = struct.Struct(">q16s")
CURSOR_LENGTH = 32
CURSOR_PATTERN = f"^[A-Za-z0-9_-]{{{CURSOR_LENGTH}}}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST, _LAST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


class SearchError(ValueError):
    """A filter, `q` or cursor that cannot be read; its message says what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended in the list's order (`created_at DESC, id DESC`)."""

    created_at: datetime
    id: UUID

    def cursor(self) -> str:
        micros = (self.created_at - _EPOCH) // timedelta(microseconds=1)
        return base64.urlsafe_b64encode(_CURSOR.pack(micros, self.id.bytes)).decode()

    @classmethod
    def from_cursor(cls, cursor: str) -> Position:
        """The position a `next_cursor` names; a `SearchError` for anything else."""
        if not re.fullmatch(CURSOR_PATTERN, cursor):
            raise SearchError(
                "cursor",
                f"not a cursor this API returned (expected {CURSOR_LENGTH} characters of "
                "A-Z, a-z, 0-9, '-' and '_': pass next_cursor as it came)",
            )
        micros, id_bytes = _CURSOR.unpack(base64.urlsafe_b64decode(cursor))
        # Past what a datetime holds: before every row, or after every row.
        try:
            created_at = _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            created_at = _LAST if micros > 0 else _FIRST
        return cls(max(_FIRST, min(created_at, _LAST)), UUID(bytes=id_bytes))


@dataclass(frozen=True, slots=True)
class JobSearch:
    """The filters of one list request; they combine with AND.

    `statuses` None means any status; an empty set (two filters that exclude each other)
    matches nothing.
    """

    statuses: frozenset[JobStatus] | None = None
    task_names: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    worker_ids: tuple[str, ...] = ()
    user_ids: tuple[UUID, ...] = ()
    project_ids: tuple[UUID, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    has_error: bool | None = None
    # JSON documents the arguments must contain; texts the error must contain; words
    # that the task name must start with or the error contain.
    arguments: tuple[str, ...] = ()
    error_texts: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @property
    def scans_text(self) -> bool:
        """Whether some term is not indexed (so its pages look at `SCAN_LIMIT` rows at most)."""
        return bool(self.arguments or self.error_texts or self.words)

    @property
    def matches_nothing(self) -> bool:
        return self.statuses is not None and not self.statuses

    def with_statuses(self, statuses: frozenset[JobStatus]) -> JobSearch:
        """Only jobs in `statuses` too (a second status filter narrows the first)."""
        kept = statuses if self.statuses is None else self.statuses & statuses
        return replace(self, statuses=kept)

    def and_(self, other: JobSearch) -> JobSearch:
        """Both searches' terms (`q`'s added to the query parameters')."""
        combined = self if other.statuses is None else self.with_statuses(other.statuses)
        return replace(
            combined,
            task_names=self.task_names + other.task_names,
            queues=self.queues + other.queues,
            worker_ids=self.worker_ids + other.worker_ids,
            user_ids=self.user_ids + other.user_ids,
            project_ids=self.project_ids + other.project_ids,
            arguments=self.arguments + other.arguments,
            error_texts=self.error_texts + other.error_texts,
            words=self.words + other.words,
        )


def parse_statuses(values: list[str]) -> frozenset[JobStatus]:
    """`status=failed&status=aborted` or `status=failed,aborted`: the statuses named."""
    statuses: set[JobStatus] = set()
    for value in values:
        for name in value.split(","):
            try:
                statuses.add(JobStatus(name))
            except ValueError:
                known = ", ".join(JobStatus)
                raise SearchError(
                    "status", f"{name!r} is not a job status (one of {known})"
                ) from None
    return frozenset(statuses)


@dataclass
class _Terms:
    """What `q` names, collected term by term."""

    statuses: list[frozenset[JobStatus]] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)
    user_ids: list[UUID] = field(default_factory=list)
    project_ids: list[UUID] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)


def parse_q(q: str) -> JobSearch:
    """The search `q` spells (see the module's docstring); a `SearchError` says what is wrong."""
    terms = _Terms()
    at = 0
    while at < len(q):
        if q[at] == " ":
            at += 1
            continue
        match = _TERM_AT.match(q, at)
        end = match.end() if match else at
        if match is None or (end < len(q) and q[end] != " "):
            raise SearchError("q", _explain(q[at:].split(" ", 1)[0]))
        _collect(terms, match)
        at = end
    search = JobSearch(
        task_names=tuple(terms.texts.get("task", ())),
        queues=tuple(terms.texts.get("queue", ())),
        worker_ids=tuple(terms.texts.get("worker", ())),
        user_ids=tuple(terms.user_ids),
        project_ids=tuple(terms.project_ids),
        arguments=tuple(terms.arguments),
        error_texts=tuple(terms.texts.get("error", ())),
        words=tuple(terms.words),
    )
    for statuses in terms.statuses:
        search = search.with_statuses(statuses)
    return search


def _collect(terms: _Terms, match: re.Match[str]) -> None:
    def group(name: str, offset: int = 0) -> str:
        return match.group(_GROUPS[name] + offset)

    if match.group("status"):
        terms.statuses.append(parse_statuses([group("status", 1)]))
    elif match.group("text"):
        terms.texts.setdefault(group("text", 1), []).append(_unquoted(group("text", 2)))
    elif match.group("uuid"):
        ids = terms.user_ids if group("uuid", 1) == "user" else terms.project_ids
        ids.append(UUID(group("uuid", 2)))
    elif match.group("args"):
        path = group("args", 1).split(".")[1:]
        terms.arguments.append(_containment(path, group("args", 2)))
    else:
        terms.words.append(_unquoted(group("word", 1)))


def _unquoted(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r'\\(["\\])', r"\1", value[1:-1])
    return value


def _containment(path: list[str], value: str) -> str:
    """`{"a": {"b": <value>}}` as JSON text; a number keeps its spelling (jsonb reads it)."""
    if value.startswith('"'):
        document = json.dumps(_unquoted(value))
    elif value in ("true", "false", "null") or _JSON_NUMBER.fullmatch(value):
        document = value
    else:
        document = json.dumps(value)
    for key in reversed(path):
        document = f"{{{json.dumps(key)}: {document}}}"
    return document


def _explain(token: str) -> str:
    """Why a term of `q` is not one: the first thing wrong with it."""
    name, colon, value = token.partition(":")
    known = "status, task, queue, worker, user, project, error, args.<key>"
    if not colon:
        return f"{token!r}: a quote is not closed or holds a NUL character"
    if name == "status":
        return f"{token!r}: status takes job statuses separated by commas ({', '.join(JobStatus)})"
    if name in ("user", "project"):
        return f"{token!r}: {name} takes a UUID"
    if name.startswith("args.") or name == "args":
        return f"{token!r}: args.<key>[.<key>...]:<value>, keys of A-Z a-z 0-9 _ -"
    if name in _TEXT_QUALIFIERS:
        return f"{token!r}: {name} takes a word or a quoted text" + (
            "" if value else " (nothing follows the colon)"
        )
    return f"{token!r}: unknown qualifier {name!r} (known: {known}); quote a word with a colon"

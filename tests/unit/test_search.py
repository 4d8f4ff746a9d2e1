"""The job list's query language and cursor, without I/O: what `q` means, that the OpenAPI
pattern and the parser accept the same strings, and cursors that survive the round trip."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.jobs.lifecycle import JobStatus
from app.jobs.reads.queries import EXAMINED, MATCHED, MATCHED_SO_FAR, read_page
from app.jobs.reads.search import (
    CURSOR_PATTERN,
    Q_PATTERN,
    SCAN_LIMIT,
    JobSearch,
    Position,
    SearchError,
    parse_q,
    parse_statuses,
)

FAILED, ABORTED, QUEUED = JobStatus.FAILED, JobStatus.ABORTED, JobStatus.QUEUED


def test_each_qualifier_becomes_its_filter() -> None:
    user, project = uuid4(), uuid4()
    search = parse_q(
        f'status:failed,aborted task:send_email queue:"mail box" worker:w:1 user:{user} '
        f'project:{project} error:"timed out" args.order_id:123 args.a.b:"x y" timeout "a b"'
    )
    assert search == JobSearch(
        statuses=frozenset({FAILED, ABORTED}),
        task_names=("send_email",),
        queues=("mail box",),
        worker_ids=("w:1",),
        user_ids=(user,),
        project_ids=(project,),
        arguments=('{"order_id": 123}', '{"a": {"b": "x y"}}'),
        error_texts=("timed out",),
        words=("timeout", "a b"),
    )
    assert search.scans_text


@pytest.mark.parametrize(
    ("term", "document"),
    [
        ("args.n:123", {"n": 123}),
        ("args.n:-1.5e3", {"n": -1500.0}),
        ('args.n:"123"', {"n": "123"}),
        ("args.n:0123", {"n": "0123"}),  # not a JSON number: a string
        ("args.n:true", {"n": True}),
        ("args.n:null", {"n": None}),
        ("args.n:abc", {"n": "abc"}),
        (r'args.n:"say \"hi\" \\ bye"', {"n": 'say "hi" \\ bye'}),
        ("args.a.b-c.d_e:1", {"a": {"b-c": {"d_e": 1}}}),
    ],
)
def test_an_args_term_is_a_json_containment(term: str, document: Any) -> None:
    (found,) = parse_q(term).arguments
    assert json.loads(found) == document


def test_status_terms_narrow_each_other_and_the_parameter_lists_add_up() -> None:
    assert parse_q("status:failed,aborted status:aborted,queued").statuses == {ABORTED}
    assert parse_q("status:failed status:queued").matches_nothing
    assert parse_statuses(["failed", "aborted,queued"]) == {FAILED, ABORTED, QUEUED}
    both = JobSearch(statuses=frozenset({FAILED, ABORTED})).and_(parse_q("status:failed"))
    assert both.statuses == {FAILED}
    assert JobSearch().and_(parse_q("")) == JobSearch()


@pytest.mark.parametrize(
    ("q", "reason"),
    [
        ("foo:bar", "unknown qualifier 'foo'"),
        ("Status:failed", "unknown qualifier 'Status'"),
        ("status:failed,", "status takes job statuses"),
        ("user:12345678", "user takes a UUID"),
        ("task:", "nothing follows the colon"),
        ('"unclosed', "a quote is not closed"),
        ('task:"a"b', "task takes a word or a quoted text"),
        ("args.:1", "args.<key>"),
        ("args.a/b:1", "args.<key>"),
        ("ok x\x00", "NUL"),
    ],
)
def test_a_bad_q_says_which_term_is_wrong_and_why(q: str, reason: str) -> None:
    with pytest.raises(SearchError, match=re.escape(reason)) as raised:
        parse_q(q)
    assert raised.value.key == "q"
    assert re.fullmatch(Q_PATTERN, q) is None  # the schema refuses it too


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.from_regex(Q_PATTERN, fullmatch=True))
def test_every_q_the_schema_allows_is_accepted(q: str) -> None:
    parse_q(q)


_ALPHABET = st.sampled_from([*' "\\:.,-_aQ1\x00', "status", "task", "args", "user", "é"])


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(_ALPHABET, max_size=12).map("".join))
def test_the_parser_accepts_exactly_what_the_schema_allows(q: str) -> None:
    allowed = re.fullmatch(Q_PATTERN, q) is not None
    try:
        parse_q(q)
    except SearchError:
        assert not allowed, q
    else:
        assert allowed, q


def test_a_cursor_names_the_position_it_was_made_from() -> None:
    position = Position(datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC), uuid4())
    cursor = position.cursor()
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert Position.from_cursor(cursor) == position
    early = Position(datetime(1, 1, 1, tzinfo=UTC), UUID(int=0))
    assert Position.from_cursor(early.cursor()) == early


def test_a_cursor_beyond_what_a_datetime_holds_is_the_first_or_last_moment() -> None:
    last = Position.from_cursor("f" + "_" * 31)  # the largest 64-bit count of microseconds
    assert last.created_at == datetime.max.replace(tzinfo=UTC)
    first = Position.from_cursor("g" + "A" * 31)  # the smallest
    assert first.created_at == datetime.min.replace(tzinfo=UTC)


@pytest.mark.parametrize("cursor", ["", "abc", "A" * 31, "A" * 33, "+" * 32, "=" * 32])
def test_anything_else_is_not_a_cursor(cursor: str) -> None:
    with pytest.raises(SearchError, match="not a cursor this API returned"):
        Position.from_cursor(cursor)


def _rows(matches: list[bool], offset_matches: int = 0) -> list[dict[str, Any]]:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    rows, so_far = [], 0
    for examined, matched in enumerate(matches, start=1):
        so_far += matched
        rows.append({
            "created_at": start - timedelta(seconds=examined), "id": uuid4(), MATCHED: matched,
            MATCHED_SO_FAR: so_far, EXAMINED: examined,
        })  # fmt: skip
    return [r for r in rows if (r[MATCHED] and r[MATCHED_SO_FAR] > offset_matches)
            or r[EXAMINED] == SCAN_LIMIT]  # fmt: skip


def test_a_text_search_page_ends_where_it_filled_or_where_the_scan_stopped() -> None:
    search = parse_q("args.n:1")
    full = _rows([True] * 5)
    page, after = read_page(full, search, limit=3, offset=0)
    assert (len(page), after) == (3, Position(page[-1]["created_at"], page[-1]["id"]))
    sparse = _rows([False] * (SCAN_LIMIT - 1) + [False])
    page, after = read_page(sparse, search, limit=3, offset=0)
    assert page == []
    assert after == Position(sparse[-1]["created_at"], sparse[-1]["id"])  # go on from there
    short = _rows([True, False, True])
    assert read_page(short, search, limit=3, offset=0) == (short, None)  # the end
    skipped = _rows([True, True, True], offset_matches=1)
    assert read_page(skipped, search, limit=3, offset=1) == (skipped, None)

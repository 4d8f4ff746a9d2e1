"""Every kind of bad input is a 4xx whose JSON body names the problem, and writes nothing.

Bodies, query values, path values and headers, including the values PostgreSQL cannot store
(NUL in text) and integers it cannot compute with (an OFFSET past bigint): each once gave a
500. A reason is checked where the body puts it: `extra[].message` beside the bad value's
`key`, or `detail` for a body that is not JSON at all.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient
from saq.queue import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from tests.support import count_rows

TRIGGER = "/api/v1/tasks/trigger-test"
JOBS = "/api/v1/jobs"
NOT_JSON = "request body is not valid JSON"


def assert_names_the_problem(response: Any, status: int, key: str | None, reason: str) -> None:
    """`status` with a JSON body that says `reason` about `key` (None: the whole request,
    in `detail` or in an error without a key)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["status_code"] == status
    errors = payload.get("extra") or []
    said = (
        [payload["detail"], *(e["message"] for e in errors if "key" not in e)]
        if key is None
        else [e["message"] for e in errors if e.get("key") == key]
    )
    assert any(reason in text for text in said), payload


async def assert_nothing_written(session: AsyncSession, queue: Queue) -> None:
    assert await count_rows(session) == 0
    assert await queue.count("queued") == 0


# (case, raw body, key of the bad value or None when `detail` says it, what the reason says)
BAD_BODIES: list[tuple[str, bytes, str | None, str]] = [
    ("malformed JSON", b'{"message": "Test message",', None, NOT_JSON),
    ("trailing garbage", b'{"message": "m"} x', None, "trailing characters"),
    ("not UTF-8", b'{"message": "\xff\xfe"}', None, "Invalid UTF-8"),
    ("unpaired high surrogate", b'{"message": "a\\ud800b"}', None, "surrogate escape `\\ud800`"),
    ("unpaired low surrogate", b'{"message": "a\\udc00"}', None, "surrogate"),
    ("NaN", b'{"message": "m", "sleep_seconds": NaN}', None, NOT_JSON),
    ("Infinity", b'{"message": "m", "sleep_seconds": Infinity}', None, NOT_JSON),
    ("empty body", b"", "data", "request body is empty"),
    ("not an object", b'["Test message"]', None, "Expected `object`, got `array`"),
    ("null", b"null", None, "Expected `object`, got `null`"),
    ("missing message", b'{"user_id": null}', None, "missing required field `message`"),
    ("message of the wrong type", b'{"message": 42}', "message", "Expected `str`, got `int`"),
    ("empty message", b'{"message": ""}', "message", "length >= 1"),
    ("message too long", b'{"message": "' + b"x" * 10_001 + b'"}', "message", "length <= 10000"),
    ("NUL in message", b'{"message": "a\\u0000b"}', "message", "without NUL characters"),
    (
        "deeply nested message",
        b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "message",
        "Expected `str`, got `array`",
    ),
    ("user_id not a UUID", b'{"message": "m", "user_id": "bob"}', "user_id", "Invalid UUID"),
    ("project_id a number", b'{"message": "m", "project_id": 12}', "project_id", "got `int`"),
    ("sleep_seconds below 0", b'{"message": "m", "sleep_seconds": -1}', "sleep_seconds", ">= 0"),
    (
        "sleep_seconds above 300",
        b'{"message": "m", "sleep_seconds": 301}',
        "sleep_seconds",
        "<= 300",
    ),
    (
        "sleep_seconds a string",
        b'{"message": "m", "sleep_seconds": "2"}',
        "sleep_seconds",
        "Expected `float`, got `str`",
    ),
    (
        "sleep_seconds past a double",
        b'{"message": "m", "sleep_seconds": 1e999}',
        "sleep_seconds",
        "out of range",
    ),
    (
        "sleep_seconds a huge integer",
        b'{"message": "m", "sleep_seconds": 1' + b"0" * 400 + b"}",
        "sleep_seconds",
        "out of range",
    ),
    ("fail 0", b'{"message": "m", "fail": 0}', "fail", "Expected `bool`, got `int`"),
    ("fail a string", b'{"message": "m", "fail": "true"}', "fail", "Expected `bool`, got `str`"),
    ("unknown field", b'{"message": "m", "sleep_second": 1}', None, "unknown field `sleep_second`"),
    ("NUL as a field name", b'{"message": "m", "\\u0000": 1}', "\\u0000", "without NUL"),
]


@pytest.mark.parametrize(
    ("case", "body", "key", "reason"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_a_bad_body_is_a_400_naming_the_problem_and_nothing_is_written(
    client: AsyncTestClient[Any],
    session: AsyncSession,
    queue: Queue,
    case: str,
    body: bytes,
    key: str | None,
    reason: str,
) -> None:
    response = await client.post(
        TRIGGER, content=body, headers={"Content-Type": "application/json"}
    )
    assert_names_the_problem(response, 400, key, reason)
    await assert_nothing_written(session, queue)


# NUL anywhere in any JSON body: refused where bodies are decoded, naming where it is (it
# once reached PostgreSQL through a key's `name`: a 500).
NUL_BODIES: list[tuple[str, bytes, str]] = [
    ("/api/v1/keys", b'{"role": "viewer", "name": "a\\u0000b"}', "name"),
    ("/api/v1/keys", b'{"role": "viewer", "name": "n", "x\\u0000": 1}', "x\\u0000"),
    ("/api/v1/jobs/bulk/cancel", b'{"filter": {"task_name": "\\u0000"}}', "filter.task_name"),
    ("/api/v1/jobs/bulk/retry", b'{"job_ids": ["\\u0000"]}', "job_ids[0]"),
    ("/api/v1/ops/prune", b'{"older_than_days": 1, "note": "\\u0000"}', "note"),
    (TRIGGER, b'{"message": "m", "user_id": "\\u0000"}', "user_id"),
]


@pytest.mark.parametrize(("path", "body", "key"), NUL_BODIES)
async def test_a_nul_anywhere_in_a_body_is_a_400_naming_where_it_is(
    client: AsyncTestClient[Any], session: AsyncSession, path: str, body: bytes, key: str
) -> None:
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert_names_the_problem(response, 400, key, "without NUL characters (\\u0000)")
    assert await count_rows(session) == 0


async def test_an_escaped_backslash_before_u0000_is_not_a_nul(
    client: AsyncTestClient[Any],
) -> None:
    body = b'{"message": "a\\\\u0000 is six characters"}'
    response = await client.post(
        TRIGGER, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text


BAD_KEYS: list[tuple[str, str, str]] = [
    ("empty", "", "length >= 1"),
    ("longer than the column", "k" * 256, "length <= 255"),
    ("far too long", "k" * 100_000, "length <= 255"),
    ("NUL", "order\x0042", "without NUL characters"),
]


@pytest.mark.parametrize(("case", "key", "reason"), BAD_KEYS, ids=[c[0] for c in BAD_KEYS])
async def test_a_bad_idempotency_key_is_a_400_and_nothing_is_written(
    client: AsyncTestClient[Any],
    session: AsyncSession,
    queue: Queue,
    case: str,
    key: str,
    reason: str,
) -> None:
    # The test client passes a NUL through; a real server's HTTP parser refuses it first.
    response = await client.post(TRIGGER, json={"message": "m"}, headers={"Idempotency-Key": key})
    assert_names_the_problem(response, 400, "idempotency_key", reason)
    await assert_nothing_written(session, queue)


async def test_an_oversized_body_is_413_and_nothing_is_written(
    client: AsyncTestClient[Any], session: AsyncSession, queue: Queue, settings: Settings
) -> None:
    huge = b'{"message": "' + b"x" * (settings.max_request_body + 1) + b'"}'
    response = await client.post(
        TRIGGER, content=huge, headers={"Content-Type": "application/json"}
    )
    assert_names_the_problem(response, 413, None, "Request Entity Too Large")
    await assert_nothing_written(session, queue)


BAD_QUERIES: list[tuple[str, str, str]] = [
    ("offset=9223372036854775808", "offset", "<= 10000"),  # past bigint: was a 500
    ("offset=99999999999999999999999", "offset", "<= 10000"),
    ("offset=10001", "offset", "<= 10000"),
    ("offset=-1", "offset", ">= 0"),
    ("limit=0", "limit", ">= 1"),
    ("limit=201", "limit", "<= 200"),
    ("limit=99999999999999999999", "limit", "<= 200"),
    ("limit=1.5", "limit", "Expected `int`"),
    ("limit=NaN", "limit", "Expected `int`"),
    ("task_name=%00", "task_name", "without NUL characters"),  # was a 500
    ("task_name=" + "t" * 201, "task_name", "length <= 200"),
    ("status=exploded", "status", "'exploded' is not a job status"),
    ("status=NULL", "status", "'NULL' is not a job status"),  # was: no filter at all
    ("user_id=null", "user_id", "'null' is not a UUID"),
    ("project_id=Null", "project_id", "'Null' is not a UUID"),
    ("user_id=bob", "user_id", "Invalid UUID"),
    ("project_id=%00", "project_id", "Invalid UUID"),
]


@pytest.mark.parametrize(
    ("query", "key", "reason"), BAD_QUERIES, ids=[q[0][:40] for q in BAD_QUERIES]
)
async def test_a_bad_query_value_is_a_400_naming_it(
    client: AsyncTestClient[Any], query: str, key: str, reason: str
) -> None:
    response = await client.get(f"{JOBS}?{query}")
    assert_names_the_problem(response, 400, key, reason)


async def test_the_largest_offset_and_a_task_named_null_are_answered(
    client: AsyncTestClient[Any],
) -> None:
    assert (await client.post(TRIGGER, json={"message": "m"})).status_code == 202
    far = (await client.get(JOBS, params={"offset": 10_000})).json()
    assert (far["total"], far["items"], far["offset"]) == (1, [], 10_000)
    # A plain string filter keeps the word "null": no task has that name.
    named_null = (await client.get(JOBS, params={"task_name": "null"})).json()
    assert named_null["total"] == 0


BAD_JOB_IDS = [
    "not-a-uuid",
    "{12345678-1234-5678-1234-567812345678}",  # Python's UUID() takes these three
    "12345678123456781234567812345678",
    "urn:uuid:12345678-1234-5678-1234-567812345678",
    "+2345678-1234-5678-1234-567812345678",  # and int(..., 16) a sign
    "12345678-1234-5678-1234-567812345678%00",
]


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
async def test_a_job_id_that_is_not_a_uuid_is_a_400(
    client: AsyncTestClient[Any], session: AsyncSession, queue: Queue, job_id: str
) -> None:
    for response in (
        await client.get(f"{JOBS}/{job_id}"),
        await client.post(f"{JOBS}/{job_id}/cancel"),
    ):
        assert_names_the_problem(response, 400, None, "job_id must be a UUID")
    await assert_nothing_written(session, queue)


async def test_strict_decoding_still_takes_every_value_the_schema_allows(
    client: AsyncTestClient[Any],
) -> None:
    user_id = str(uuid4()).upper()
    body = (
        '{"message": "emoji \\ud83d\\ude00 and accents: \\u00e9", '
        f'"user_id": "{user_id}", "sleep_seconds": 3, "fail": false}}'
    )
    response = await client.post(
        TRIGGER,
        content=body.encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": "order 7"},
    )
    assert response.status_code == 202, response.text
    job = (await client.get(f"{JOBS}/{response.json()['job_id']}")).json()
    assert job["user_id"] == user_id.lower()
    assert job["arguments"] == {
        "message": "emoji \U0001f600 and accents: \u00e9",
        "sleep_seconds": 3.0,
        "fail": False,
    }

"""The one error body, and what each operation answers besides its success, for OpenAPI.

A leaf (imports nothing from `app`), so the jobs API, the admin API and the operations
routes all document their errors the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType

DATABASE_DOWN = "PostgreSQL cannot be reached; nothing was written"
# Every operation that takes a body answers this to one that is not JSON (docs/security.md).
NOT_JSON = "The body is not sent as JSON (`Content-Type: application/json`). Nothing was done."

# What every guarded operation answers without a valid key, or with too little access.
ACCESS_DENIED = {
    401: "No API key, or an unknown or revoked one: send `Authorization: Bearer <key>`.",
    403: "The key's role may not do this, or the project asked for is not the key's.",
    429: "Too many failed keys from this address in the last minute: try again after "
    "`Retry-After` seconds.",
}


class ErrorBody(msgspec.Struct):
    """Every 4xx and 503 answer: the status again, what is wrong, and per-field details."""

    status_code: int
    detail: str
    # Validation failures: one {"message", "key", "source"} per bad value.
    extra: list[dict[str, Any]] | dict[str, Any] | None = None


def errors(described: Mapping[int, str], *, guarded: bool = True) -> dict[int, ResponseSpec]:
    """Error answers (and a guarded route's 401 and 403), each with the one error body."""
    answers = {**ACCESS_DENIED, **described} if guarded else described
    return {
        status: ResponseSpec(data_container=ErrorBody, description=text, generate_examples=False)
        for status, text in sorted(answers.items())
    }


def string_only(**schema: Any) -> dict[str, Any]:
    """An optional query value or header is absent or a string, never JSON null: replaces
    Litestar's `oneOf: [..., {type: null}]` for an `X | None` parameter."""
    return {"one_of": None, "type": OpenAPIType.STRING, **schema}

"""How failures reach a client: a 4xx or 503 with a JSON body that says why, never a 500."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
import structlog
from advanced_alchemy.exceptions import AdvancedAlchemyError, RepositoryError
from litestar import Request, Response
from litestar.exceptions import ClientException, SerializationException
from litestar.status_codes import (
    HTTP_409_CONFLICT,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from app.jobs.http.shared.schemas import WITHOUT_NUL, WITHOUT_NUL_EXPLAINED
from app.jobs.outbox.enqueuer import IdempotencyConflictError
from app.jobs.reads.service import JobAlreadyFinishedError

log = structlog.get_logger(__name__)

_DATABASE_DOWN = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # The server ended the statement, not the request's fault: its connection terminated
    # mid-query (admin shutdown, a restart), a statement or lock timeout.
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.LockNotAvailableError,
    OSError,
)
_QUEUE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _error_response(status_code: int, detail: str) -> Response[dict[str, Any]]:
    return Response({"status_code": status_code, "detail": detail}, status_code=status_code)


def _reason(chain: list[BaseException]) -> str:
    """The first cause's class and message, e.g. the driver's "canceling statement due to lock
    timeout" (advanced-alchemy's wrappers may fail to print at all)."""
    root = chain[-1]
    try:
        return f"{type(root).__name__}: {root}"
    except Exception:
        return type(root).__name__


def unavailable_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    chain = _causes(exc)
    if any(isinstance(cause, _QUEUE_DOWN) for cause in chain):
        log.warning("queue unavailable", path=request.url.path, error=_reason(chain))
        return _error_response(HTTP_503_SERVICE_UNAVAILABLE, "job queue unavailable, try again")
    if any(isinstance(cause, _DATABASE_DOWN) for cause in chain):
        log.warning("database unavailable", path=request.url.path, error=_reason(chain))
        return _error_response(HTTP_503_SERVICE_UNAVAILABLE, "database unavailable, try again")
    log.exception("unexpected storage error", path=request.url.path)
    return _error_response(HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error")


_NUL_CHECK = f"matching regex {WITHOUT_NUL!r}"


def _explained(error: Any) -> Any:
    """A validation error's message in words where Litestar would show a regex or a key."""
    if not isinstance(error, dict):
        return error
    message = str(error.get("message", ""))
    if _NUL_CHECK in message:
        return {**error, "message": message.replace(_NUL_CHECK, WITHOUT_NUL_EXPLAINED)}
    if error.get("key") == "data" and message == "'data'":  # Litestar's word for no body
        return {**error, "message": "the request body is empty: send a JSON object"}
    return error


def client_error_handler(
    request: Request[Any, Any, Any], exc: ClientException
) -> Response[dict[str, Any]]:
    """Litestar's 4xx body, with a plain reason when the body is not JSON at all."""
    detail = exc.detail
    if isinstance(exc.__cause__, SerializationException):
        detail = f"request body is not valid JSON: {exc.detail}"
    content: dict[str, Any] = {"status_code": exc.status_code, "detail": detail}
    if exc.extra:
        extra = exc.extra
        content["extra"] = [_explained(e) for e in extra] if isinstance(extra, list) else extra
    return Response(content, status_code=exc.status_code, headers=exc.headers)


def conflict_handler(request: Request[Any, Any, Any], exc: ValueError) -> Response[dict[str, Any]]:
    return _error_response(HTTP_409_CONFLICT, str(exc))


def exception_handlers() -> ExceptionHandlersMap:
    return {
        ClientException: client_error_handler,
        IdempotencyConflictError: conflict_handler,
        JobAlreadyFinishedError: conflict_handler,
        redis.exceptions.RedisError: unavailable_handler,
        sqlalchemy.exc.SQLAlchemyError: unavailable_handler,
        AdvancedAlchemyError: unavailable_handler,
        # Named so advanced-alchemy's plugin adds no handler of its own: it answered a
        # failed statement (even a missing column) with "409 None".
        RepositoryError: unavailable_handler,
        asyncpg.PostgresError: unavailable_handler,
        asyncpg.InterfaceError: unavailable_handler,  # a read through the driver (JobRows)
        OSError: unavailable_handler,
    }

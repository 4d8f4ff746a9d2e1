"""Who a request's key or session cookie stands for: `Authenticator`, with its caches.

Keys are looked up by their digest and the answer is kept for `KEY_CACHE_TTL` seconds, so the
trigger's hot path does not pay a query per request; a revocation therefore reaches other API
processes within that time (the process that revokes forgets the key at once). Keys found
and keys not found are kept apart, each bounded: a flood of made-up keys fills only the
second and never evicts a real key. Sessions (`app.auth.session`) resolve to their key's
digest through a cache of the same time, so a logout also reaches every process within it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar
from uuid import UUID

import structlog
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException

from app.auth.keys import ApiKeyService, digest
from app.auth.roles import BOOTSTRAP, OPEN_MODE, Principal, Role

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth.session import SessionCookies, SessionStore
    from app.auth.throttle import FailureThrottle

log = structlog.get_logger(__name__)
T = TypeVar("T")

KEY_CACHE_TTL = 10.0  # seconds a looked-up key or session (or its absence) is trusted
TOUCH_INTERVAL = 60.0  # seconds between two writes of one key's last_used_at
MAX_KNOWN = 10_000  # keys and sessions found, kept at most (each cache its own bound)
MAX_UNKNOWN = 10_000  # made-up keys remembered as unknown, at most


def unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True, slots=True)
class _Cached(Generic[T]):
    value: T
    expires_at: float


class _TimedCache(Generic[T]):
    """Answers kept `ttl` seconds, at most `bound` of them (emptied when full: a flood of new
    entries costs a query each, it never grows the process)."""

    def __init__(self, ttl: float, bound: int, clock: Callable[[], float]) -> None:
        self._ttl, self._bound, self._clock = ttl, bound, clock
        self._entries: dict[str, _Cached[T]] = {}

    def get(self, key: str) -> _Cached[T] | None:
        cached = self._entries.get(key)
        return cached if cached is not None and cached.expires_at > self._clock() else None

    def put(self, key: str, value: T) -> None:
        if len(self._entries) >= self._bound and key not in self._entries:
            self._entries.clear()
        self._entries[key] = _Cached(value, self._clock() + self._ttl)

    def drop(self, matches: Callable[[str, T], bool]) -> None:
        for key, cached in list(self._entries.items()):
            if matches(key, cached.value):
                del self._entries[key]


class Authenticator:
    """Resolves a request's key (or session) to a `Principal`: the bootstrap key, or a key
    row by digest."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        *,
        open_mode: bool,
        bootstrap_digest: str | None,
        disabled_but_keyed: bool = False,
        ttl: float = KEY_CACHE_TTL,
        touch_interval: float = TOUCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        cookies: SessionCookies | None = None,
        session_store: SessionStore | None = None,
        throttle: FailureThrottle | None = None,
        max_known: int = MAX_KNOWN,
        max_unknown: int = MAX_UNKNOWN,
    ) -> None:
        self.open_mode = open_mode
        self.throttle = throttle  # failed key checks per client address; None: not limited
        self.cookies = cookies  # the monitor's browser sessions; None: no sessions
        self.session_store = session_store
        self._disabled_but_keyed = disabled_but_keyed  # AUTH_DISABLED with ADMIN_API_KEY
        self._sessions = sessions
        self._bootstrap = bootstrap_digest
        self._touch_interval = touch_interval
        self._clock = clock
        self._known: _TimedCache[Principal] = _TimedCache(ttl, max_known, clock)
        self._unknown: _TimedCache[None] = _TimedCache(ttl, max_unknown, clock)
        self._live_sessions: _TimedCache[str | None] = _TimedCache(ttl, max_known, clock)
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}
        self._touched: dict[UUID, float] = {}
        self._touches: set[asyncio.Task[None]] = set()

    async def principal_for(self, authorization: str | None) -> Principal:
        """Who the Authorization header names; 401 for a missing, unknown or revoked key."""
        if self.open_mode:
            return OPEN_MODE
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        return await self.principal_by_digest(digest(key))

    async def principal_for_session(self, cookie: str) -> Principal:
        """Who a session cookie stands for (its key, looked up as the key would be); 401 for
        a forged or expired cookie, an ended session, or a key revoked since the login."""
        if self.open_mode:
            return OPEN_MODE
        session_id = self.cookies.session_id(cookie) if self.cookies is not None else None
        key_hash = await self._session_key(session_id) if session_id is not None else None
        if key_hash is None:
            raise unauthorized("the session has ended or is not valid: log in again")
        return await self.principal_by_digest(key_hash)

    async def start_session(self, key_hash: str) -> str:
        """A new session for the key of `key_hash`: its cookie value."""
        if self.cookies is None or self.session_store is None:
            raise RuntimeError("this app keeps no sessions")
        session_id, value = self.cookies.issue()
        await self.session_store.start(session_id, key_hash, self.cookies.max_age)
        return value

    async def end_session(self, cookie: str) -> None:
        """Log out: the session is refused at once here, within the cache time elsewhere."""
        session_id = self.cookies.session_id(cookie) if self.cookies is not None else None
        if session_id is None or self.session_store is None:
            return
        await self.session_store.end(session_id)
        self._live_sessions.put(session_id, None)

    def refuse_if_throttled(self, address: str) -> None:
        """429 while `address` has failed too many key checks or logins of late."""
        wait = self.throttle.retry_after(address) if self.throttle is not None else None
        if wait is not None:
            raise TooManyRequestsException(
                detail=f"too many failed keys or logins from this address: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def record_failure(self, address: str) -> None:
        if self.throttle is not None:
            self.throttle.failed(address)

    async def principal_by_digest(self, key_hash: str) -> Principal:
        if self._bootstrap is not None and hmac.compare_digest(key_hash, self._bootstrap):
            return BOOTSTRAP
        principal = await self._lookup(key_hash)
        if principal is None:
            raise unauthorized("unknown or revoked API key")
        self._touch(principal)
        return principal

    def forget(self, key_id: UUID) -> None:
        """Drop a key's cached answer now (this process revoked it)."""
        self._known.drop(lambda _, principal: principal.key_id == key_id)

    async def announce(self) -> None:
        """The start-up line saying whether access is checked (loud when it is not)."""
        if self.open_mode:
            log.warning(
                "AUTH DISABLED: every route is open to anyone who can reach this port "
                "(AUTH_DISABLED=true); on a shared network set AUTH_DISABLED=false and "
                "ADMIN_API_KEY (docs/security.md)"
            )
        elif self._disabled_but_keyed:
            log.warning("AUTH_DISABLED ignored: ADMIN_API_KEY is set, so access checks are on")
        else:
            log.info("access checks on", bootstrap_key=self._bootstrap is not None)

    async def close(self) -> None:
        """Let pending last_used_at writes finish (they are short)."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)

    async def _session_key(self, session_id: str) -> str | None:
        cached = self._live_sessions.get(session_id)
        if cached is not None:
            return cached.value
        if self.session_store is None:
            return None
        key_hash = await self.session_store.key_digest(session_id)
        self._live_sessions.put(session_id, key_hash)
        return key_hash

    async def _lookup(self, key_hash: str) -> Principal | None:
        known = self._known.get(key_hash)
        if known is not None:
            return known.value
        if self._unknown.get(key_hash) is not None:
            return None
        # Concurrent requests with the same key share one query.
        pending = self._lookups.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._read(key_hash))
            self._lookups[key_hash] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(key_hash, None))
        principal = await asyncio.shield(pending)
        if principal is None:
            self._unknown.put(key_hash, None)
        else:
            self._known.put(key_hash, principal)
        return principal

    async def _read(self, key_hash: str) -> Principal | None:
        async with self._sessions() as session:
            row = await ApiKeyService(session).find_by_digest(key_hash)
        if row is None or row.revoked_at is not None:
            return None
        return Principal(
            actor=row.prefix, role=Role(row.role), project_id=row.project_id, key_id=row.id
        )

    def _touch(self, principal: Principal) -> None:
        """Write last_used_at at most once per TOUCH_INTERVAL per key, after the request."""
        key_id = principal.key_id
        now = self._clock()
        if key_id is None or now - self._touched.get(key_id, -self._touch_interval) < (
            self._touch_interval
        ):
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._write_touch(key_id, datetime.now(UTC)))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _write_touch(self, key_id: UUID, at: datetime) -> None:
        try:
            async with self._sessions() as session:
                await ApiKeyService(session).touch(key_id, at)
        except Exception as exc:  # only bookkeeping: the request it came from succeeded
            log.warning("could not record an API key's use", key_id=str(key_id), error=str(exc))

"""The browser session: a login becomes a random session id that stands for the key entered.

`SESSION_COOKIE` holds the session id (256 random bits), its expiry and an HMAC of both under
the process's session secret, so a forged or altered cookie is refused without a look-up.
Redis holds, under the SHA-256 of the id (never the id itself), the digest of the key the
session stands for, and forgets it when the session expires or its user logs out. Neither a
database dump (no session in it) nor a Redis dump (no session id in it), with the session
secret or not, gives a usable cookie. The guard resolves the session to its key's digest
and then like a key, through the same cache: a revoked key ends its sessions too
(docs/security.md). A leaf below the guard: it knows no request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

SESSION_COOKIE = "bgj_session"
SESSION_MAX_AGE = 8 * 3600  # seconds a login lasts (a working day)
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_DIGEST = re.compile(r"[0-9a-f]{64}")


class SessionCookies:
    """Issues and reads session cookie values signed with `secret`."""

    def __init__(
        self,
        secret: str,
        *,
        max_age: int = SESSION_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret.encode()
        self.max_age = max_age
        self._clock = clock

    def issue(self) -> tuple[str, str]:
        """A new session's id and its cookie value, valid for `max_age` seconds."""
        session_id = secrets.token_urlsafe(32)
        payload = f"{session_id}.{int(self._clock()) + self.max_age}"
        return session_id, f"{payload}.{self._sign(payload)}"

    def session_id(self, value: str) -> str | None:
        """The session id a cookie value carries; None if forged, malformed or expired."""
        payload, _, signature = value.rpartition(".")
        session_id, _, expires = payload.partition(".")
        if not (_SESSION_ID.fullmatch(session_id) and expires.isdigit()):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        return session_id if int(expires) > self._clock() else None

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()


class SessionStore:
    """The live sessions in Redis: the SHA-256 of a session id -> its key's digest."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    async def start(self, session_id: str, key_digest: str, seconds: int) -> None:
        await self._redis.set(self._key(session_id), key_digest, ex=seconds)

    async def key_digest(self, session_id: str) -> str | None:
        """The digest of the key a live session stands for; None once it has ended."""
        found = await self._redis.get(self._key(session_id))
        if found is None:
            return None
        text = found.decode() if isinstance(found, bytes) else str(found)
        return text if _DIGEST.fullmatch(text) else None

    async def end(self, session_id: str) -> None:
        await self._redis.delete(self._key(session_id))

    def _key(self, session_id: str) -> str:
        return f"{self._namespace}:{hashlib.sha256(session_id.encode()).hexdigest()}"

"""The browser session: a signed cookie that stands for an API key after one login.

The monitor's login page takes a key once and answers with `SESSION_COOKIE`, which holds the
key's SHA-256 (never the key), an expiry and an HMAC of both under the process's session
secret. The guard resolves it like a key: by digest, through the same cache, so a revoked
key ends its sessions too (docs/security.md). A leaf below the guard: it knows no request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable

SESSION_COOKIE = "bgj_session"
SESSION_MAX_AGE = 8 * 3600  # seconds a login lasts (a working day)
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

    def issue(self, key_digest: str) -> str:
        """The cookie value for a key (by its digest), valid for `max_age` seconds."""
        payload = f"{key_digest}.{int(self._clock()) + self.max_age}"
        return f"{payload}.{self._sign(payload)}"

    def key_digest(self, value: str) -> str | None:
        """The key digest a cookie value stands for; None if forged, malformed or expired."""
        payload, _, signature = value.rpartition(".")
        key_digest, _, expires = payload.partition(".")
        if not (_DIGEST.fullmatch(key_digest) and expires.isdigit()):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        return key_digest if int(expires) > self._clock() else None

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

"""Failed key checks per client address (a leaf of `app.auth`): after `limit` of them within a
minute, an address's key checks and logins are refused (`429`) until the oldest counted one
is a minute old.

Keys are 256 random bits, so no one guesses one; what this stops is a flood of tries at the
database (each unknown key costs a look-up once its cached answer expires) and at the login
form. It is kept in each API process's memory: with N processes an address gets up to N
times the limit, and a restart forgets (docs/security.md). Behind a proxy the address is
the one uvicorn takes from `X-Forwarded-For` (FORWARDED_ALLOW_IPS).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW = 60.0  # seconds a failure counts against its address
MAX_ADDRESSES = 10_000  # addresses followed at most (forgotten first: those with no failure left)


class FailureThrottle:
    def __init__(
        self,
        limit: int,
        *,
        window: float = WINDOW,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._window = window
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again; None if it may now."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1, math.ceil(failures[0] + self._window - self._clock()))

    def failed(self, address: str) -> None:
        failures = self._recent(address)
        if failures is None:
            if len(self._failures) >= self._max_addresses:
                self._forget_the_idle()
            failures = self._failures[address] = deque(maxlen=self.limit)
        failures.append(self._clock())

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        since = self._clock() - self._window
        while failures and failures[0] <= since:
            failures.popleft()
        return failures

    def _forget_the_idle(self) -> None:
        for address in list(self._failures):
            if not self._recent(address):
                del self._failures[address]
        if len(self._failures) >= self._max_addresses:  # a flood from as many addresses
            self._failures.clear()

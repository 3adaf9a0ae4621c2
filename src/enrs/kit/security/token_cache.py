"""The principals of access tokens already verified, until the tokens expire.

Checking an ES256 signature costs ~120 µs of CPU, and turning the claims into a principal
(parsing the scopes) some more, on every request that carries a token; a client sends the same
token for up to an hour. The cache key is the whole token string (header, claims and
signature): a token differing by one byte is verified anew. An entry is dropped at the
token's expiry (``exp`` plus the clock leeway the verification allows), so the cache never
accepts a token the verification would refuse for its age; it changes nothing else (the
platform's tokens cannot be revoked before they expire, cached or not).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from enrs.kit.security.principal import Principal
from enrs.kit.security.tokens import CLOCK_LEEWAY


class VerifiedTokens:
    """A bounded LRU map: token → (principal, expiry), shared by the threads of a process."""

    def __init__(self, size: int = 10_000, *, clock: Callable[[], float] = time.time) -> None:
        self.size, self._clock = size, clock
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        """The principal of ``token`` if it was verified and has not expired since."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if self._clock() > entry[1]:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[0]

    def put(self, token: str, principal: Principal, expires_at: float) -> None:
        """Remember ``token``'s principal until ``expires_at`` (its ``exp`` claim)."""
        with self._lock:
            self._entries[token] = (principal, expires_at + CLOCK_LEEWAY)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

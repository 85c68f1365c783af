"""Checking a presented token: a short cache in front of the database, and a limit on failed
attempts per client address (in-process; each service instance counts its own)."""

import logging
import math
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import tokens
from shared.auth.tokens import Lookup
from shared.metrics import start_at_zero

log = logging.getLogger("caravan.auth")

AUTH_FAILURES = Counter(
    "caravan_auth_failures_total",
    "Refused HTTP calls: missing, malformed, unknown or revoked token, wrong scope, throttled",
    ["service", "reason"],
)
REFUSALS = ("missing", "malformed", "unknown", "revoked", "scope", "throttled")
"""The ``reason`` of every refusal :func:`shared.http.authorize_token` makes (notifications'
receipts add ``receipts_secret``)."""

MAX_TRACKED = 10_000  # client addresses / cached tokens kept before the oldest are dropped


class FailureLimiter:
    """After ``max_failures`` failed attempts from one address within ``window`` seconds, that
    address is refused (everything, good tokens too) until the window has passed."""

    def __init__(
        self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        until = self._blocked_until.get(client)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self._blocked_until[client]
            return None
        return max(1, math.ceil(left))

    def failed(self, client: str) -> None:
        now = self.clock()
        if client not in self._failures and len(self._failures) >= MAX_TRACKED:
            self._failures.pop(next(iter(self._failures)))
        times = self._failures.setdefault(client, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            self._blocked_until[client] = now + self.window
            times.clear()


class TokenCache:
    """Lookups kept for ``ttl`` seconds: a revoked token keeps working at most that long."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, Lookup]] = {}

    def get(self, key: str) -> Lookup | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def put(self, key: str, found: Lookup) -> None:
        if self.ttl <= 0 or found.refused in ("unknown", "malformed"):
            return  # guesses are not cached: they would only fill the memory
        if len(self._entries) >= MAX_TRACKED:
            self._entries.clear()
        self._entries[key] = (self.clock() + self.ttl, found)


class Guard:
    """Verifies tokens against ``auth.tokens`` for one process."""

    def __init__(
        self, service: str, engine: AsyncEngine, cache_seconds: float, limiter: FailureLimiter
    ):
        self.service = service  # the ``service`` label of its refusals
        self.engine = engine
        self.cache = TokenCache(cache_seconds)
        self.limiter = limiter
        start_at_zero(AUTH_FAILURES, [service], REFUSALS)  # the first refusal of each counts

    async def lookup(self, token: str) -> Lookup:
        key = tokens.digest(token)
        found = self.cache.get(key)
        if found is None:
            async with self.engine.connect() as conn:
                found = await tokens.lookup(conn, token)
            self.cache.put(key, found)
        return found

    def refused(self, reason: str, client: str, method: str, path: str) -> None:
        """Count and log a refusal (never the token); failures of authentication count
        towards the client's limit, a wrong scope does not."""
        AUTH_FAILURES.labels(self.service, reason).inc()
        log.warning("refused %s %s from %s: %s", method, path, client, reason)
        if reason not in ("scope", "throttled"):
            self.limiter.failed(client)

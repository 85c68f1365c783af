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
from shared.db.engine import address, described, is_transient, lost_connection
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


KEPT_IN_OUTAGE = 3600.0
"""Seconds since a token's verdict was last read from ``auth.tokens`` for which it still
stands while the database cannot be reached (:meth:`Guard.lookup`). A revocation is written
there (``caravan tokens revoke``, an UPDATE of ``auth.tokens``, the only change a token ever
has), so none can have been made while PostgreSQL itself is down; but a fault of this
process's alone (its network path to the server, its pool full, the server refusing its
role more connections) leaves ``caravan tokens revoke`` working elsewhere, unseen here until
the database answers this process again. The bound caps that: an hour outlasts a restart or
a failover (seconds to minutes), so the operations page and the scrapes see such an outage
through (CaravanFiguresStale fires after a minute of it), and a token revoked during a fault
of this process's alone is refused here within the hour whatever the fault."""


class TokenCache:
    """Verdicts read from the database, trusted for ``ttl`` seconds (a revoked token keeps
    working at most that long) and kept for :data:`KEPT_IN_OUTAGE` while the database cannot
    be reached (:meth:`kept`)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, Lookup]] = {}  # when read, the verdict

    def get(self, key: str) -> Lookup | None:
        """The verdict read less than ``ttl`` seconds ago, if any."""
        return self._read_within(key, self.ttl)

    def kept(self, key: str) -> tuple[Lookup, float] | None:
        """The verdict read less than :data:`KEPT_IN_OUTAGE` seconds ago and how many seconds
        ago, for when the database cannot be asked."""
        found = self._read_within(key, KEPT_IN_OUTAGE)
        return None if found is None else (found, self.clock() - self._entries[key][0])

    def _read_within(self, key: str, seconds: float) -> Lookup | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] + seconds <= self.clock():
            return None
        return entry[1]

    def put(self, key: str, found: Lookup) -> None:
        if found.refused in ("unknown", "malformed"):
            return  # guesses are not kept: they would only fill the memory
        if len(self._entries) >= MAX_TRACKED:
            self._entries.clear()
        self._entries[key] = (self.clock(), found)


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
        """The token's verdict: cached, else read from ``auth.tokens``. With the database
        away (a transient fault), one read before (within :data:`KEPT_IN_OUTAGE`) stands
        (stale-if-error), so the operations page and ``/metrics`` answer through an outage;
        a token never seen is not refused (it may be valid): the fault is raised (503)."""
        key = tokens.digest(token)
        found = self.cache.get(key)
        if found is not None:
            return found
        try:
            found = await self._read(token)
        except Exception as exc:
            kept = self.cache.kept(key) if is_transient(exc) else None
            if kept is None:
                raise
            found, age = kept
            who = f"token {found.principal.name!r}" if found.principal else "a revoked token"
            where = address(self.engine)
            log.warning("%s; %s taken as read %.0f s ago", described(exc, where), who, age)
            return found
        self.cache.put(key, found)
        return found

    async def _read(self, token: str) -> Lookup:
        try:
            async with self.engine.connect() as conn:
                return await tokens.lookup(conn, token)
        except Exception as exc:
            if not lost_connection(exc):
                raise
        # A pooled connection that died with a restart of PostgreSQL (the pool has dropped
        # the others with it): a new one is asked, so that a token revoked since is refused
        # rather than taken as read before.
        async with self.engine.connect() as conn:
            return await tokens.lookup(conn, token)

    def refused(self, reason: str, client: str, method: str, path: str) -> None:
        """Count and log a refusal (never the token); failures of authentication count
        towards the client's limit, a wrong scope does not."""
        AUTH_FAILURES.labels(self.service, reason).inc()
        log.warning("refused %s %s from %s: %s", method, path, client, reason)
        if reason not in ("scope", "throttled"):
            self.limiter.failed(client)

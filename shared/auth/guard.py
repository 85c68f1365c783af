"""Checking a presented token: a short cache in front of the database, and a limit on failed
attempts per client address (in-process; each service instance counts its own)."""

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import tokens
from shared.auth.tokens import Lookup
from shared.db.engine import address, answered_within, described, fault, retried_fault
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
    address is refused until the window has passed: every token but those the process read
    valid before (:meth:`Guard.known`)."""

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
"""Seconds since a token's verdict was last read from ``auth.tokens`` for which it may still
stand while PostgreSQL cannot be reached (:meth:`Guard.lookup`): an hour outlasts a restart
or a failover (seconds to minutes), so the operations page and the scrapes see such an
outage through (CaravanFiguresStale fires after a minute of it)."""

SILENCE_BEFORE_OUTAGE = 60.0
"""Seconds between this process's last read of ``auth.tokens`` and the first failure to reach
it within which a verdict read before may stand: a revocation made in between is unseen here
(Prometheus reads every process's ``/metrics`` each 15 s, so one that is scraped has read
the table well within it)."""

READ_WITHIN = 4.0
"""Seconds a token's read may take before PostgreSQL is taken as unreachable: against a hung
server the connect waits ``CARAVAN_DB_CONNECT_TIMEOUT_SECONDS`` (10 s), past Prometheus's
10 s scrape timeout, so a scrape in such an outage would never be answered."""


class TokenCache:
    """Verdicts read from the database, trusted for ``ttl`` seconds (a revoked token keeps
    working at most that long) and, with a ``ttl`` above 0, kept for :data:`KEPT_IN_OUTAGE`
    for when the database cannot be reached (:meth:`kept`)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, Lookup]] = {}  # when read, the verdict

    def get(self, key: str) -> Lookup | None:
        """The verdict read less than ``ttl`` seconds ago, if any."""
        return self._read_within(key, self.ttl)

    def kept(self, key: str) -> tuple[Lookup, float] | None:
        """The verdict read less than :data:`KEPT_IN_OUTAGE` seconds ago and how many seconds
        ago, for when the database cannot be asked; never with a ``ttl`` of 0 (no keeping)."""
        found = self._read_within(key, KEPT_IN_OUTAGE if self.ttl > 0 else 0)
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
        self,
        service: str,
        engine: AsyncEngine,
        cache_seconds: float,
        limiter: FailureLimiter,
        spare: Callable[[], AsyncEngine | None] = lambda: None,
    ):
        self.service = service  # the ``service`` label of its refusals
        self.engine = engine
        self.spare = spare  # where to read instead of ``engine`` for now, if anywhere
        self.sparing = False  # a read on it under way: the others wait for ``engine``
        self.cache = TokenCache(cache_seconds)
        self.limiter = limiter
        self.read_within = READ_WITHIN
        self.revoked = -1  # the most tokens seen revoked, at the last read of auth.tokens
        self.contact: float | None = None  # when (the cache's clock) that read was
        self.failing_since: float | None = None  # the first failure to reach it since
        start_at_zero(AUTH_FAILURES, [service], REFUSALS)  # the first refusal of each counts

    async def lookup(self, token: str) -> Lookup:
        """The token's verdict: cached, else read from ``auth.tokens``. With PostgreSQL not
        reachable (:attr:`~shared.db.engine.Kind.away`), a verdict read before stands
        (stale-if-error), so the operations page and ``/metrics`` answer through an outage,
        if no revocation can have been missed since it was read: as many tokens were revoked
        then as at this process's last read of the table, that read came less than
        :data:`SILENCE_BEFORE_OUTAGE` before the failures began, and it is at most
        :data:`KEPT_IN_OUTAGE` old. Else, and for a token never seen (it may be valid), the
        fault is raised (503), never a 401."""
        key = tokens.digest(token)
        found = self.cache.get(key)
        if found is not None:
            return found
        try:
            found = await self._read(token)
        except Exception as exc:
            kept = self._kept(key, exc)
            if kept is None:
                raise
            found, age = kept
            who = f"token {found.principal.name!r}" if found.principal else "a revoked token"
            where = address(self.engine)
            said = described(exc, where)
            log.warning("%s; %s taken as read %.0f s ago", said, who, age, extra=retried_fault(exc))
            return found
        if found.revoked is not None:
            self.revoked = max(self.revoked, found.revoked)  # reads may end out of order
            self.contact, self.failing_since = self.cache.clock(), None
        self.cache.put(key, found)
        return found

    def known(self, token: str) -> bool:
        """Whether this process read ``token`` valid in the last :data:`KEPT_IN_OUTAGE`
        seconds (not a guess: a throttled address may still use it, checked as ever)."""
        kept = self.cache.kept(tokens.digest(token))
        return kept is not None and kept[0].principal is not None

    def _kept(self, key: str, exc: Exception) -> tuple[Lookup, float] | None:
        if not fault(exc).kind.away:
            return None  # the server answers others: a revocation may be written meanwhile
        now = self.cache.clock()
        if self.failing_since is None:
            self.failing_since = now
        kept = self.cache.kept(key)
        if kept is None or kept[0].revoked != self.revoked or self.contact is None:
            return None
        return kept if self.failing_since - self.contact <= SILENCE_BEFORE_OUTAGE else None

    async def _read(self, token: str) -> Lookup:
        """``token`` read, within :attr:`read_within` seconds (else :class:`NoAnswer`). A
        pooled connection that died at use (PostgreSQL restarted; the pool drops the others
        with it) is retried once on a new one, so that a token revoked since is refused
        rather than taken as read before; a connection that could not be made is not.

        Read on the engine :attr:`spare` names when it names one: a service's connection kept
        apart from its pool while every one of the pool's is in use (:func:`shared.http.
        install_auth`), where the read waited for one and, none freed within its bound,
        refused the call 503, Prometheus's scrape with it: a pool held full by slow
        statements was said as the service down, its ``caravan_db_pool_connections`` never
        read. One read at a time (:attr:`sparing`), the others waiting for ``engine`` as
        before: ``/healthz`` asks on that connection too, and waited behind every read
        queued on it, each call with a token never read valid (a guess, not cached) one
        more, so that 1,500 such calls at once, from one address and with no token of ours,
        made a busy instance's ``/healthz`` a 503 after 6.8 s, as taken away as it was when
        it asked on the pool."""
        engine = None if self.sparing else self.spare()
        if engine is None:
            return await self._read_on(self.engine, token)
        self.sparing = True
        try:
            return await self._read_on(engine, token)
        finally:
            self.sparing = False

    async def _read_on(self, engine: AsyncEngine, token: str) -> Lookup:
        """:meth:`_read` on ``engine``."""
        async with answered_within(engine, self.read_within):
            connected = False
            try:
                async with engine.connect() as conn:
                    connected = True
                    return await tokens.lookup(conn, token)
            except Exception as exc:
                if not (connected and fault(exc).kind.lost):
                    raise
            async with engine.connect() as conn:
                return await tokens.lookup(conn, token)

    def refused(
        self,
        reason: str,
        client: str,
        method: str,
        path: str,
        token: str | None = None,
        scopes: Sequence[str] = (),
    ) -> None:
        """Count and log a refusal, naming the token where it is known (``token``, its name,
        never its secret: a revoked one, or a valid one lacking ``scopes``), so an operator
        can tell whose call it was; failures of authentication count towards the client's
        limit, a wrong scope does not."""
        AUTH_FAILURES.labels(self.service, reason).inc()
        lacks = f" lacks the scope {' or '.join(scopes)}" if scopes else ""
        named = "" if token is None else f" (token {token!r}{lacks})"
        log.warning("refused %s %s from %s: %s%s", method, path, client, reason, named)
        if reason not in ("scope", "throttled"):
            self.limiter.failed(client)

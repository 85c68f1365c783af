"""The pure parts of authentication: token shape and hashing, scopes, the failure limiter
and the token cache (with a fake clock)."""

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.auth.guard import KEPT_IN_OUTAGE, REFUSALS, FailureLimiter, Guard, TokenCache
from shared.auth.scopes import SCOPES
from shared.auth.tokens import (
    PREFIX,
    BadToken,
    Lookup,
    Principal,
    check_scopes,
    digest,
    new_token,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_prefixed_random_and_hashed() -> None:
    a, b = new_token(), new_token()
    assert a.startswith(PREFIX) and len(a) == len(PREFIX) + 43 and a != b
    assert digest(a) == digest(a) != digest(b) and len(digest(a)) == 64 and a not in digest(a)


def test_scopes_are_checked() -> None:
    assert check_scopes(["ops", "ops", "metrics"]) == ["metrics", "ops"]
    assert {"orders:write", "orders:read", "inventory:write", "credit:write", "ops"} <= set(SCOPES)
    with pytest.raises(BadToken, match="unknown scope"):
        check_scopes(["ops", "root"])
    with pytest.raises(BadToken, match="no scope"):
        check_scopes([])


def test_the_limiter_blocks_an_address_after_max_failures_for_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, 60.0, clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None  # per address
    clock.now += 59.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now += 1
    assert limiter.retry_after("10.0.0.1") is None


def test_old_failures_fall_out_of_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, 60.0, clock)
    limiter.failed("a")
    limiter.failed("a")
    clock.now += 61
    limiter.failed("a")
    assert limiter.retry_after("a") is None


def test_the_cache_keeps_verdicts_for_ttl_but_never_guesses() -> None:
    clock = Clock()
    cache = TokenCache(2.0, clock)
    ok = Lookup(Principal("t", frozenset({"ops"})), None)
    cache.put("k", ok)
    cache.put("guess", Lookup(None, "unknown"))
    assert cache.get("k") == ok and cache.get("guess") is None
    clock.now += 2.0
    assert cache.get("k") is None
    assert TokenCache(0, clock).get("k") is None


def test_every_refusal_is_counted_from_zero() -> None:
    """``caravan_auth_failures_total`` shows each reason at 0 once a service checks tokens, so
    that ``increase()`` (infra/prometheus/alerts.yml's CaravanAuthFailures) sees the first
    refusal of each: a series first seen at 1 has no increase."""
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # not used
    Guard("orders", engine, 1.0, FailureLimiter(10, 60.0))
    counted = {
        r: REGISTRY.get_sample_value(
            "caravan_auth_failures_total", {"service": "orders", "reason": r}
        )
        for r in REFUSALS
    }
    assert None not in counted.values(), counted


class FakeTokens:
    """``auth.tokens`` behind an engine: the rows by hash, or ``down`` raised at connect (a
    lost pooled connection: ``lost`` raised at the first connect only)."""

    url = make_url("postgresql+asyncpg://caravan@:15432/caravan?host=/srv/pg/socket")

    def __init__(self) -> None:
        self.rows: dict[str, SimpleNamespace] = {}
        self.down: BaseException | None = None
        self.lost: BaseException | None = None
        self.reads = 0

    def issue(self, name: str, scopes: set[str]) -> str:
        token = new_token()
        self.rows[digest(token)] = SimpleNamespace(
            name=name, hash=digest(token), scopes=sorted(scopes), revoked_at=None
        )
        return token

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator["FakeTokens"]:
        lost, self.lost = self.lost, None
        if self.down is not None or lost is not None:
            raise self.down or lost  # type: ignore[misc]
        yield self

    async def execute(self, statement: Any) -> SimpleNamespace:
        self.reads += 1
        presented = statement.compile().params["hash_1"]
        return SimpleNamespace(first=lambda: self.rows.get(presented))


def guard_on(db: FakeTokens, clock: Clock) -> Guard:
    guard = Guard("orders", cast(AsyncEngine, db), 2.0, FailureLimiter(10, 60.0))
    guard.cache = TokenCache(2.0, clock)
    return guard


async def test_in_an_outage_a_token_read_before_keeps_its_verdict_for_an_hour() -> None:
    """With PostgreSQL away, every call's token check answered 503: the operations page and
    every /metrics (so Prometheus's CaravanServiceDown fired for all five services, and
    CaravanFiguresStale could never fire). A verdict read before now stands, at most
    KEPT_IN_OUTAGE since it was read; a token never seen is not refused (it may be valid),
    the fault is raised (503)."""
    clock, db = Clock(), FakeTokens()
    seen, revoked = db.issue("seen", {"metrics"}), db.issue("revoked", {"ops"})
    db.rows[digest(revoked)].revoked_at = "yesterday"
    never = db.issue("never", {"ops"})
    guard = guard_on(db, clock)
    valid = Lookup(Principal("seen", frozenset({"metrics"})), None)
    assert await guard.lookup(seen) == valid
    assert await guard.lookup(revoked) == Lookup(None, "revoked")
    db.down = FileNotFoundError(2, "No such file or directory")  # the local cluster stopped
    clock.now += 60
    assert await guard.lookup(seen) == valid
    assert await guard.lookup(revoked) == Lookup(None, "revoked")
    with pytest.raises(FileNotFoundError):
        await guard.lookup(never)
    with pytest.raises(FileNotFoundError):
        await guard.lookup(new_token())  # a guess: neither refused nor let in
    clock.now += KEPT_IN_OUTAGE - 60 - 1
    assert await guard.lookup(seen) == valid
    clock.now += 1
    with pytest.raises(FileNotFoundError):
        await guard.lookup(seen)
    db.down = None  # back: read again, and kept from then on
    assert await guard.lookup(seen) == valid


async def test_only_a_transient_fault_lets_a_verdict_read_before_stand() -> None:
    clock, db = Clock(), FakeTokens()
    seen = db.issue("seen", {"metrics"})
    guard = guard_on(db, clock)
    await guard.lookup(seen)
    clock.now += 3
    db.down = asyncpg.InsufficientPrivilegeError("permission denied for table tokens")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await guard.lookup(seen)


async def test_a_pooled_connection_lost_with_a_restart_is_not_taken_for_an_outage() -> None:
    """After PostgreSQL restarted, a pooled connection fails once: the token is read on a new
    one, so a revocation made since is seen (within the cache's 2 s, as before), not
    overruled by the verdict read before."""
    clock, db = Clock(), FakeTokens()
    token = db.issue("soon-revoked", {"ops"})
    guard = guard_on(db, clock)
    await guard.lookup(token)
    db.rows[digest(token)].revoked_at = "now"
    clock.now += 2
    db.lost = ConnectionResetError(104, "Connection reset by peer")
    assert await guard.lookup(token) == Lookup(None, "revoked")

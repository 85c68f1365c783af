"""The pure parts of authentication: token shape and hashing, scopes, the failure limiter
and the token cache (with a fake clock)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.auth.guard import (
    KEPT_IN_OUTAGE,
    REFUSALS,
    SILENCE_BEFORE_OUTAGE,
    FailureLimiter,
    Guard,
    TokenCache,
)
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
from shared.db.engine import NoAnswer


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
    listed = ", ".join(SCOPES)  # each refusal names the scopes there are: it named none
    with pytest.raises(BadToken) as unknown:
        check_scopes(["ops", "orders:raed"])
    assert str(unknown.value) == f"unknown scope(s): orders:raed (the scopes: {listed})"
    with pytest.raises(BadToken) as none:
        check_scopes([])
    assert str(none.value) == f"no scope given (the scopes: {listed})"


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
    """``auth.tokens`` behind an engine: the rows by hash, ``down`` raised at connect (a
    connection that cannot be made), ``lost`` raised at the next statement only (a pooled
    connection that died with a restart), every connect waiting for ever while ``hung``."""

    url = make_url("postgresql+asyncpg://caravan@:15432/caravan?host=/srv/pg/socket")

    def __init__(self) -> None:
        self.rows: dict[str, SimpleNamespace] = {}
        self.down: BaseException | None = None
        self.lost: BaseException | None = None
        self.hung = False
        self.connects = 0

    def issue(self, name: str, scopes: set[str]) -> str:
        token = new_token()
        self.rows[digest(token)] = SimpleNamespace(
            name=name, hash=digest(token), scopes=sorted(scopes), sources=None, revoked_at=None
        )
        return token

    def revoke(self, token: str) -> None:
        self.rows[digest(token)].revoked_at = "now"

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator["FakeTokens"]:
        self.connects += 1
        if self.hung:
            await asyncio.Event().wait()
        if self.down is not None:
            raise self.down
        yield self

    async def execute(self, statement: Any) -> SimpleNamespace:
        lost, self.lost = self.lost, None
        if lost is not None:
            raise lost
        presented = statement.compile().params["hash_1"]
        row = self.rows.get(presented) or SimpleNamespace(
            name=None, hash=None, scopes=None, sources=None, revoked_at=None
        )
        revoked = sum(r.revoked_at is not None for r in self.rows.values())
        return SimpleNamespace(one=lambda: SimpleNamespace(**vars(row), revoked=revoked))


def guard_on(db: FakeTokens, clock: Clock, ttl: float = 2.0) -> Guard:
    guard = Guard("orders", cast(AsyncEngine, db), ttl, FailureLimiter(10, 60.0))
    guard.cache = TokenCache(ttl, clock)
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
    """After PostgreSQL restarted, a pooled connection fails at its first statement: the token
    is read on a new one, so a revocation made since is seen (within the cache's 2 s, as
    before), not overruled by the verdict read before."""
    clock, db = Clock(), FakeTokens()
    token = db.issue("soon-revoked", {"ops"})
    guard = guard_on(db, clock)
    await guard.lookup(token)
    db.revoke(token)
    clock.now += 2
    db.lost = asyncpg.InterfaceError("connection is closed")
    assert await guard.lookup(token) == Lookup(None, "revoked")
    assert db.connects == 3


async def test_a_revocation_another_read_saw_keeps_a_verdict_read_before_from_standing() -> None:
    """A token read valid at t0, revoked at t0+10 s while PostgreSQL was up and not presented
    again, was let in during an outage at t0+610 s: its verdict was kept from t0, though
    this process had read the table since (the scrape token's checks) and seen it revoked."""
    clock, db = Clock(), FakeTokens()
    revoked, scrape, other = (db.issue(n, {"ops"}) for n in ("revoked", "scrape", "other"))
    guard = guard_on(db, clock)
    valid = await guard.lookup(revoked)
    await guard.lookup(other)
    clock.now += 10
    db.revoke(revoked)
    for _ in range(40):  # Prometheus's scrapes, each 15 s
        clock.now += 15
        await guard.lookup(scrape)
    db.down = ConnectionRefusedError(111, "Connect call failed")
    with pytest.raises(ConnectionRefusedError):
        await guard.lookup(revoked)
    with pytest.raises(ConnectionRefusedError):
        await guard.lookup(other)  # read before that revocation: it may have been this one
    assert (await guard.lookup(scrape)).principal is not None  # read since: it stands
    db.down = None
    assert await guard.lookup(revoked) == Lookup(None, "revoked") != valid


async def test_a_verdict_stands_only_if_the_table_was_read_just_before_the_outage() -> None:
    """With nothing read for longer than SILENCE_BEFORE_OUTAGE before the failures began, a
    revocation made meanwhile could not have been seen: no verdict stands."""
    clock, db = Clock(), FakeTokens()
    token = db.issue("idle", {"ops"})
    guard = guard_on(db, clock)
    await guard.lookup(token)
    clock.now += 10
    db.revoke(token)  # unseen: nothing read since
    clock.now += SILENCE_BEFORE_OUTAGE
    db.down = ConnectionRefusedError(111, "Connect call failed")
    with pytest.raises(ConnectionRefusedError):
        await guard.lookup(token)


async def test_with_no_cache_nothing_is_kept_for_an_outage() -> None:
    """CARAVAN_AUTH_CACHE_SECONDS=0 turned the keeping off, and had to again."""
    clock, db = Clock(), FakeTokens()
    token = db.issue("seen", {"ops"})
    guard = guard_on(db, clock, ttl=0)
    await guard.lookup(token)
    db.down = ConnectionRefusedError(111, "Connect call failed")
    with pytest.raises(ConnectionRefusedError):
        await guard.lookup(token)


@pytest.mark.parametrize(
    "fault",
    [
        sa_exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.LockNotAvailableError("could not obtain lock"),
        asyncpg.InvalidPasswordError('password authentication failed for user "caravan"'),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_fault_with_postgresql_up_does_not_let_a_verdict_read_before_stand(
    fault: BaseException,
) -> None:
    """A pool exhausted, too many connections, a conflict, a lock not granted: PostgreSQL
    answers others, which may revoke meanwhile."""
    clock, db = Clock(), FakeTokens()
    token = db.issue("seen", {"ops"})
    guard = guard_on(db, clock)
    await guard.lookup(token)
    clock.now += 3
    db.down = fault
    with pytest.raises(type(fault)):
        await guard.lookup(token)


@pytest.mark.parametrize(
    "fault",
    [
        FileNotFoundError(2, "No such file or directory"),
        NoAnswer("db.example:5432", 10),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_postgresql_not_reached_lets_a_verdict_read_before_stand(
    fault: BaseException,
) -> None:
    clock, db = Clock(), FakeTokens()
    token = db.issue("seen", {"ops"})
    guard = guard_on(db, clock)
    valid = await guard.lookup(token)
    clock.now += 3
    db.down = fault
    assert await guard.lookup(token) == valid


async def test_a_connection_that_could_not_be_made_is_not_made_again() -> None:
    """NoAnswer (a ConnectionError) was taken for a lost pooled connection: two connects of
    10 s each against a hung server, past Prometheus's 10 s scrape timeout."""
    clock, db = Clock(), FakeTokens()
    token = db.issue("seen", {"ops"})
    guard = guard_on(db, clock)
    await guard.lookup(token)
    clock.now += 3
    db.down = NoAnswer("db.example:5432", 10)
    await guard.lookup(token)
    assert db.connects == 2


async def test_a_hung_server_is_given_up_on_within_the_read_bound() -> None:
    """A server that accepts and never answers: the read is given up after ``read_within``
    (NoAnswer, PostgreSQL unreachable), so a verdict read before answers the scrape."""
    clock, db = Clock(), FakeTokens()
    seen, never = db.issue("seen", {"ops"}), db.issue("never", {"ops"})
    guard = guard_on(db, clock)
    guard.read_within = 0.05
    valid = await guard.lookup(seen)
    clock.now += 3
    db.hung = True
    async with asyncio.timeout(5):  # a scrape's 10 s, less the rest of its work
        assert await guard.lookup(seen) == valid
    with pytest.raises(NoAnswer, match=r"did not answer within 0\.05 s"):
        await guard.lookup(never)

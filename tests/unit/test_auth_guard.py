"""The pure parts of authentication: token shape and hashing, scopes, the failure limiter
and the token cache (with a fake clock)."""

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from shared.auth.guard import REFUSALS, FailureLimiter, Guard, TokenCache
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

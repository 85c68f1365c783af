"""The log lines of the work the services' loops do for an order carry its ``order_id``, as
the consumers' do: the prepaid gateway's retries and declines, the SMS dispatcher's failures,
the platform's status callbacks. Without it, a line such as "gateway: timed out; retrying"
could not be found by the order it was about (the loops, with a unit of work whose database
is faked and failing gateways)."""

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time
from types import SimpleNamespace
from typing import Any

import pytest

from services.notifications import dispatch
from services.notifications.adapters.gateway import GatewayError
from services.notifications.domain.delivery import QuietHours, RetryPolicy
from services.payments import prepaid
from services.payments.adapters.gateway import GatewayUnavailable
from services.platform import callbacks
from services.platform.adapters.platform_api import PlatformUnavailable
from services.platform.domain.delivery import Backoff
from shared.logs import JsonFormatter


class Lines(logging.Handler):
    """Each line as the service writes it: formatted when logged, in the context of then."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.entries: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(JsonFormatter("test").format(record)))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class Done:
    """A fenced update's answer: the row was updated."""

    def first(self) -> tuple[str]:
        return ("updated",)


class FakeConnection:
    async def execute(self, statement: Any, *args: Any) -> Done:
        return Done()


class FakeTx:
    conn = FakeConnection()

    def after_commit(self, callback: Any) -> None:
        callback()


class FakeUow:
    @asynccontextmanager
    async def begin(self, cause: Any = None) -> AsyncIterator[FakeTx]:
        yield FakeTx()


def about(lines: Lines, said: str) -> list[str | None]:
    """The order ids of the lines whose message holds ``said`` (one at least)."""
    found = [entry.get("order_id") for entry in lines.entries if said in entry["message"]]
    assert found, [entry["message"] for entry in lines.entries]
    return found


async def test_the_prepaid_gateways_retry_names_the_order(lines: Lines) -> None:
    class Down:
        async def charge(self, key: str, amount_fen: int, buyer_id: str) -> Any:
            raise GatewayUnavailable("timed out")

    work = prepaid.Work("o-prepaid", "charging", "b-1", 12_500, attempts=1)
    await prepaid.perform(FakeUow(), Down(), work, retry=1.0)  # type: ignore[arg-type]
    assert about(lines, "retrying in") == ["o-prepaid"]


async def test_a_text_that_failed_names_its_order(lines: Lines) -> None:
    row = SimpleNamespace(
        sms_id="s-1",
        order_id="o-sms",
        attempts=1,
        purpose="order_confirmed",
        to="+8613912345678",
        trace_headers=None,
        not_before=None,
        created_at=datetime.now(UTC),
    )
    policy = dispatch.DeliveryPolicy(RetryPolicy(), QuietHours(time(0), time(0)))
    failed = GatewayError("gateway answered 401", transient=True)
    assert await dispatch.record(FakeTx(), [(row, failed)], policy) == ["retry"]  # type: ignore[arg-type]
    assert about(lines, "attempt 1 failed") == ["o-sms"]


async def test_a_status_callback_that_failed_names_its_order(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = SimpleNamespace(
        event_id="e-1",
        app="shop-a",
        platform_order_id="p-1",
        order_id="o-platform",
        outcome="confirmed",
        reason=None,
        attempts=1,
        trace_headers=None,
    )

    async def claim_due(*_: Any) -> list[Any]:
        return [row]

    class Down:
        apps = ("shop-a",)

        async def push_status(self, app: str, update: Any) -> int:
            raise PlatformUnavailable("connection refused")

    monkeypatch.setattr(callbacks, "claim_due", claim_due)
    policy = callbacks.CallbackPolicy(Backoff(max_attempts=1))
    assert await callbacks.deliver_once(FakeUow(), Down(), policy) == 1  # type: ignore[arg-type]
    assert about(lines, "failed after 1 attempts") == ["o-platform"]

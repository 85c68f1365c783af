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
from services.payments.adapters.gateway import ChargeResult, GatewayUnavailable
from services.platform import callbacks
from services.platform.adapters.platform_api import PlatformUnavailable
from services.platform.domain.delivery import Backoff
from shared.logs import FAULTS, JsonFormatter


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


class Gone:
    """A fenced update's answer: no row was updated (the payment moved on)."""

    def first(self) -> None:
        return None


class GoneUow:
    """A unit of work whose updates find no row: an answer recorded as ignored."""

    @asynccontextmanager
    async def begin(self, cause: Any = None) -> AsyncIterator[Any]:
        class Connection:
            async def execute(self, statement: Any, *args: Any) -> Gone:
                return Gone()

        yield SimpleNamespace(conn=Connection())


async def test_a_payment_gateway_outage_is_one_warning_then_a_line_when_it_answers(
    lines: Lines,
) -> None:
    """The gateway away, each order's call retried logged a warning (hundreds a minute in an
    outage, where docs/operations.md says a retried fault is one warning, then one a minute):
    now the first, naming its order, then none until a minute passes; a call answered ends
    the outage in one line, and the next outage is said at once."""
    up = False

    class Gateway:
        async def charge(self, key: str, amount_fen: int, buyer_id: str) -> Any:
            if not up:
                raise GatewayUnavailable(f"HTTP 503 for {key}")
            return ChargeResult("approved", charge_id=f"c-{key}")

    async def charge(order_id: str) -> None:
        work = prepaid.Work(order_id, "charging", "b-1", 100, attempts=1)
        uow = GoneUow() if up else FakeUow()
        await prepaid.perform(uow, Gateway(), work, retry=1.0)  # type: ignore[arg-type]

    lines.addFilter(FAULTS)  # as the service's handler has it (configure_logging)
    try:
        for n in range(20):
            await charge(f"o-{n}")
        up = True
        await charge("o-up")
        up = False
        await charge("o-again")
    finally:
        lines.removeFilter(FAULTS)
        FAULTS.over(prepaid.GATEWAY_AWAY)
    said = [(entry["level"], entry["message"]) for entry in lines.entries]
    assert said == [
        ("warning", "gateway: HTTP 503 for o-0 for order o-0; retrying in 1.0s"),
        (
            "info",
            "the payment gateway answers again, 0 s after it was first found away"
            " (19 warnings of it not logged since the last that was)",
        ),
        (
            "info",
            "order o-up is no longer charging; gateway answer"
            " ChargeResult(status='approved', charge_id='c-o-up', reason=None) ignored",
        ),
        ("warning", "gateway: HTTP 503 for o-again for order o-again; retrying in 1.0s"),
    ], said


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

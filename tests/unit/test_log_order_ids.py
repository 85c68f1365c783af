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
from services.notifications.adapters.gateway import Accepted, GatewayError, OutgoingSms
from services.notifications.domain.delivery import QuietHours, RetryPolicy
from services.payments import prepaid
from services.payments.adapters.gateway import ChargeResult, GatewayUnavailable
from services.platform import callbacks
from services.platform.adapters.platform_api import PlatformUnavailable
from services.platform.domain.retries import Backoff
from shared.events.envelope import CloudEvent
from shared.logs import JsonFormatter, bind_order, order_known
from shared.messaging.consumer import OrderNames, order_of
from tests.unit.conftest import saying_retried_faults


class Lines(logging.Handler):
    """Each line as the service writes it: formatted when logged, in the context of then."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.entries: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(JsonFormatter("test").format(record)))


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    """The lines logged, as a service's log handler writes them (configure_logging): a
    retried fault's said as it says them (:func:`saying_retried_faults`)."""
    handler = Lines()
    saying_retried_faults(handler, monkeypatch)
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
    await prepaid.perform(FakeUow(), Down(), [work], retry=1.0)  # type: ignore[arg-type]
    assert about(lines, "retrying in") == ["o-prepaid"]


class Gone:
    """A fenced update's answer: no row was updated (the payment moved on)."""

    def first(self) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(())


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
        await prepaid.perform(uow, Gateway(), [work], retry=1.0)  # type: ignore[arg-type]

    for n in range(20):
        await charge(f"o-{n}")
    up = True
    await charge("o-up")
    up = False
    await charge("o-again")
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


def a_text(sms_id: str) -> SimpleNamespace:
    """A claimed text (its first attempt) of the order ``o-<sms_id>``."""
    return SimpleNamespace(
        sms_id=sms_id,
        dedup_key=f"k-{sms_id}",
        order_id=f"o-{sms_id}",
        attempts=1,
        purpose="order_confirmed",
        to="+8613912345678",
        text="hi",
        trace_headers=None,
        not_before=None,
        created_at=datetime.now(UTC),
    )


async def test_an_sms_gateway_outage_is_one_warning_then_a_line_when_it_answers(
    lines: Lines,
) -> None:
    """The SMS gateway away, each text's failed attempt was an info line (hundreds a minute
    in an outage, where docs/operations.md says a retried fault is one warning, then one a
    minute): now the first, naming its text and order, then none until a minute passes; a
    text the gateway answers (takes, or refuses for good) ends the outage in one line, and
    the next outage is said at once."""
    answer: str = "away"

    class Gateway:
        async def send(self, message: OutgoingSms) -> Accepted:
            if answer == "away":
                raise GatewayError(f"HTTP 503 for {message.sms_id}", transient=True)
            if answer == "refused":
                raise GatewayError("HTTP 400: not a mobile number", transient=False)
            return Accepted(provider_id=f"p-{message.sms_id}")

    policy = dispatch.DeliveryPolicy(RetryPolicy(), QuietHours(time(0), time(0)))

    async def send(sms_id: str) -> None:
        row = a_text(sms_id)
        outcome = await dispatch.call_gateway(Gateway(), row)  # type: ignore[arg-type]
        if isinstance(outcome, GatewayError) and outcome.transient:  # recorded as a retry
            await dispatch.record(FakeTx(), [(row, outcome)], policy)  # type: ignore[arg-type]

    for n in range(20):
        await send(f"s-{n}")
    answer = "taken"
    await send("s-up")
    for answer in ("away", "refused", "away"):
        await send(f"s-{answer}")
    said = [
        (entry["level"], entry["message"].split("; next at")[0], entry.get("order_id"))
        for entry in lines.entries
    ]
    back = (
        "info",
        "the SMS gateway answers again, 0 s after it was first found away"
        " (%d warnings of it not logged since the last that was)",
        None,
    )
    assert said == [
        ("warning", "sms s-0 attempt 1 failed (HTTP 503 for s-0)", "o-s-0"),
        (back[0], back[1] % 19, "o-s-up"),
        ("warning", "sms s-away attempt 1 failed (HTTP 503 for s-away)", "o-s-away"),
        (back[0], back[1] % 0, "o-s-refused"),
        ("warning", "sms s-away attempt 1 failed (HTTP 503 for s-away)", "o-s-away"),
    ], said


async def test_a_platform_outage_is_one_warning_an_app_then_a_line_when_it_answers(
    lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform's status API away, each callback's failed call was an info line: now the
    first of each app's outage, naming its order, then none until a minute passes; a call the
    app's API answers ends its outage in one line. Another app's outage is its own."""
    due: list[Any] = []
    down = {"shop-a", "shop-b"}

    def callback(order_id: str, app: str = "shop-a") -> SimpleNamespace:
        return SimpleNamespace(
            event_id=f"e-{order_id}",
            app=app,
            platform_order_id=f"p-{order_id}",
            order_id=order_id,
            outcome="confirmed",
            reason=None,
            attempts=1,
            trace_headers=None,
        )

    async def claim_due(*_: Any) -> list[Any]:
        return [due.pop(0)]

    class Api:
        apps = ("shop-a", "shop-b")

        async def push_status(self, app: str, update: Any) -> int:
            if app in down:
                raise PlatformUnavailable("connection refused")
            return 200

    async def deliver(row: SimpleNamespace) -> None:
        due.append(row)
        await callbacks.deliver_once(FakeUow(), Api(), policy)  # type: ignore[arg-type]

    monkeypatch.setattr(callbacks, "claim_due", claim_due)
    policy = callbacks.CallbackPolicy(Backoff(max_attempts=30))
    for n in range(20):
        await deliver(callback(f"o-{n}"))
    await deliver(callback("o-b", app="shop-b"))
    down.discard("shop-a")
    await deliver(callback("o-up"))
    await deliver(callback("o-b2", app="shop-b"))
    said = [(entry["level"], entry["message"], entry.get("order_id")) for entry in lines.entries]
    assert said == [
        ("warning", "status callback of shop-a/p-o-0: connection refused; retrying", "o-0"),
        ("warning", "status callback of shop-b/p-o-b: connection refused; retrying", "o-b"),
        (
            "info",
            "the status API of shop-a answers again, 0 s after it was first found away"
            " (19 warnings of it not logged since the last that was)",
            "o-up",
        ),
    ], said


def envelope(event_type: str, correlation_id: str | None, **data: str) -> CloudEvent:
    return CloudEvent.model_validate(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "storefront/demo",
            "type": event_type,
            "time": "2026-12-07T10:00:00Z",
            "data": data,
            "correlationid": correlation_id,
        }
    )


def test_a_requests_lines_name_its_ref_and_then_the_order_it_placed(lines: Lines) -> None:
    """An ``order.requested``'s correlation id is the storefront's ref, not an order id: its
    lines said it as their ``order_id`` (a search by the order's id missed them). They name it
    ``order_ref``, and the order's id from when the handler knows it."""
    ref = "DEMO-bb5c62-0002"
    placed = envelope("order.placed", "o-placed", order_id="o-placed", order_ref=ref)
    assert order_of(placed) == OrderNames("o-placed", ref)
    assert order_of(envelope("order.requested", None, order_ref=ref)) == OrderNames(None, ref)
    long = "x" * 100_000  # a request refused for it: its lines and span say 64 characters
    cut = OrderNames(None, "x" * 64)
    assert order_of(envelope("order.requested", long, order_ref=long)) == cut
    names = order_of(envelope("order.requested", ref, order_ref=ref))
    assert names == OrderNames(None, ref)
    said = logging.getLogger("test")
    with bind_order(names.order_id, "order.requested", names.order_ref):
        said.info("asked")
        order_known("o-placed")
        said.info("placed")
    said.info("after")
    asked, known, after = lines.entries
    assert (asked.get("order_id"), asked.get("order_ref")) == (None, ref), asked
    assert (known["order_id"], known["order_ref"]) == ("o-placed", ref), known
    assert "order_id" not in after and "order_ref" not in after, after


def test_a_correlation_id_that_names_no_order_is_said_as_what_it_is(lines: Lines) -> None:
    """A request dead-lettered before its order_ref is known is answered ``order.rejected``
    whose correlation id is the request's event id: its readers logged that as ``order_id``
    (a search by an order's id found an event's), as they did a storefront's own correlation
    id on its request. Said as ``correlation_id``; an order's events still name their order."""
    request_id = "4d1f0b6e-2c1a-4c53-9a55-0f6a3b1c2d3e"
    rejected = order_of(envelope("order.rejected", request_id, order_ref=""))
    assert rejected == OrderNames(None, None, request_id)
    own = order_of(envelope("order.requested", "shop-trace-77", order_ref="R-1"))
    assert own == OrderNames(None, "R-1", "shop-trace-77")
    platform = order_of(envelope("platform.order_requested", "R-2", order_ref="R-2"))
    assert platform == OrderNames(None, "R-2")
    assert order_of(envelope("order.cancelled", "o-1")) == OrderNames("o-1")
    with bind_order(rejected.order_id, "order.rejected", None, rejected.correlation_id):
        logging.getLogger("test").info("rejected")
    (line,) = lines.entries
    assert "order_id" not in line and line["correlation_id"] == request_id, line

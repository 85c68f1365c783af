"""The orders state machine on the running system (real Kafka, real PostgreSQL): duplicated
events, a hold that ran out, buyer cancellation racing confirmation, the saga deadline."""

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import orjson
import pytest
from aiokafka.structs import RecordMetadata

from caravan import system
from shared import days
from shared.events.envelope import CloudEvent, EventData, new_event
from shared.events.inventory import StockExpired, StockRejected
from shared.events.orders import OrderRequested
from shared.events.payments import PaymentAuthorized, PaymentDeclined
from shared.seed import SeedFile
from shared.topics import Topic
from tests.e2e.markers import consumed_again, order_handled
from tests.harness import System, ref

RICH = {"id": "ord-rich", "phone": "+8613900009101", "locale": "en"}
POOR = {"id": "ord-poor", "phone": "+8613900009102", "locale": "zh-CN"}
PRICE = 1200
SAGA_TOPICS = (Topic.ORDER_EVENTS, Topic.INVENTORY_EVENTS, Topic.PAYMENT_EVENTS)


def orders_seed() -> SeedFile:
    today = days.today()
    year = timedelta(days=365)
    return SeedFile.model_validate(
        {
            "sellers": [
                {"id": "ord-seller", "name": "Orders test coop", "county": "Shawan",
                 "phone": "+8613000009101"}
            ],
            "products": [
                {"sku": "ORD-PEPPER", "seller_id": "ord-seller", "unit_price_fen": PRICE,
                 "name": {"en": "ORD pepper"}}
            ],
            "lots": [
                {"lot_id": "ORD-PEP-1", "sku": "ORD-PEPPER", "quantity": 1_000_000,
                 "available_from": str(today - year), "best_before": str(today + year)}
            ],
            "buyers": [
                {**RICH, "credit_limit_fen": 10**12},
                {**POOR, "credit_limit_fen": 100},
            ],
        }
    )  # fmt: skip


@pytest.fixture(autouse=True)
async def seeded(caravan: System) -> None:
    await caravan.seed(orders_seed())  # idempotent: loading it again changes nothing


def order(buyer: dict[str, str] = RICH, method: str = "microloan") -> OrderRequested:
    payment = {"method": method, "term_months": 3} if method == "microloan" else {"method": method}
    return OrderRequested.model_validate(
        {
            "order_ref": ref("ORD"),
            "buyer": buyer,
            "lines": [{"sku": "ORD-PEPPER", "quantity": 2}],
            "payment": payment,
        }
    )


def body(buyer: dict[str, str] = RICH, method: str = "microloan") -> dict[str, object]:
    return order(buyer, method).model_dump(mode="json", exclude={"order_ref"})


async def publish(caravan: System, event: CloudEvent, topic: Topic, key: str) -> RecordMetadata:
    return await caravan.publish_raw(topic.value, event.to_json(), key=key.encode())


async def emit_as(caravan: System, data: EventData, service: str) -> CloudEvent:
    """Publish ``data`` as if ``service`` had emitted it (a new event id)."""
    order_id = str(getattr(data, "order_id"))  # noqa: B009
    event = new_event(data, source=f"caravan/{service}", correlation_id=order_id)
    await publish(caravan, event, data.topic, order_id)
    return event


async def dead_letters(caravan: System, schema: str, order_id: str) -> int:
    """How many records keyed ``order_id`` the service of ``schema`` dead-lettered."""
    return int(
        await caravan.scalar(
            f"select count(*) from {schema}.outbox where topic like '%.dlq' and key = :k",
            k=order_id.encode(),
        )
    )


async def reservation(caravan: System, order_id: str) -> str | None:
    status = await caravan.scalar(
        "select status from inventory.reservations where order_id = :o", o=order_id
    )
    return None if status is None else str(status)


async def active_loans(caravan: System, order_id: str) -> int:
    return int(
        await caravan.scalar(
            "select count(*) from payments.loans where order_id = :o and status = 'active'",
            o=order_id,
        )
    )


async def payment_settled(caravan: System, order_id: str) -> bool:
    """Payments has seen the order's cancellation (nothing lent, or the loan voided), or its
    reservation only after its hold had lapsed (declined: nothing lent, nothing to void)."""
    status = await caravan.scalar(
        "select status from payments.payments where order_id = :o", o=order_id
    )
    return status in ("cancelled", "voided", "declined")


async def compensated(caravan: System, order_id: str) -> None:
    """A cancelled order ends holding no stock and no active loan."""
    await caravan.until(lambda: payment_settled(caravan, order_id), f"payments of {order_id}")
    await caravan.until(
        lambda: reservation_in(caravan, order_id, ("released", None)),
        f"stock of {order_id} released",
    )
    assert await active_loans(caravan, order_id) == 0


async def reservation_in(caravan: System, order_id: str, allowed: tuple[str | None, ...]) -> bool:
    return await reservation(caravan, order_id) in allowed


async def recorded(caravan: System, order_id: str, step: str) -> bool:
    return step in await caravan.timeline(order_id)


@asynccontextmanager
async def payments_stopped(caravan: System) -> AsyncIterator[None]:
    """Payments is down, so orders stay pending with their stock held."""
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        yield
    finally:
        caravan.procs.start(("payments",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)


async def reserved(caravan: System, order_id: str) -> CloudEvent:
    found = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id)
    )
    return found[0]


async def pending(caravan: System, key: str) -> PaymentAuthorized:
    """Place an order of RICH's with payments stopped (it stays pending, its stock held) and
    return the authorisation that would confirm it."""
    placed = await caravan.client.post(
        "/orders", json=body(), headers={"Idempotency-Key": ref(key)}
    )
    order_id = placed.json()["order_id"]
    total = int((await reserved(caravan, order_id)).data["total_fen"])
    return PaymentAuthorized(
        order_id=order_id, buyer_id=RICH["id"], method="microloan", amount_fen=total,
        term_months=3,
    )  # fmt: skip


# --- every event twice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buyer", "outcome", "inputs"),
    [
        (RICH, ("order.confirmed", None), ("stock.reserved", "payment.authorized")),
        (POOR, ("order.cancelled", "credit_declined"), ("stock.reserved", "payment.declined")),
    ],
    ids=["confirmed", "credit-declined"],
)
async def test_every_saga_event_twice_still_ends_the_order_once(
    caravan: System,
    buyer: dict[str, str],
    outcome: tuple[str, str | None],
    inputs: tuple[str, str],
) -> None:
    req = order(buyer)
    requested = await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    first = await caravan.outcome(order_id)
    assert (first.type, first.data.get("reason")) == outcome
    # Inventory settles the reservation after the outcome, in its own time.
    settled = "stock.released" if first.type == "order.cancelled" else "stock.sold"
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type=settled, order_id=order_id)
    )
    events = [(t, e) for t in SAGA_TOPICS for e in caravan.log.events(t, order_id=order_id)]
    # The same events again (each service's inbox drops them) ...
    await publish(caravan, requested, Topic.ORDER_REQUESTS, req.order_ref)
    copies = [await publish(caravan, event, topic, order_id) for topic, event in events]
    # ... and the same facts under new event ids, which reach the orders handlers (and
    # payments', stock.reserved).
    again = requested.model_copy(update={"id": str(uuid.uuid4())})
    await publish(caravan, again, Topic.ORDER_REQUESTS, req.order_ref)
    for topic, event in events:
        if event.type in inputs:
            copy = event.model_copy(update={"id": str(uuid.uuid4())})
            copies.append(await publish(caravan, copy, topic, order_id))

    async def copies_recorded() -> bool:
        steps = await caravan.timeline(order_id)
        handled = await caravan.scalar(
            "select count(*) from orders.inbox where key = :k", k=f"{again.source}|{again.id}"
        )
        return handled == 1 and all(steps.count(t) == 2 for t in inputs)

    # The new-id copies were published last on their partitions: once they are recorded,
    # every copy before them has been consumed as well.
    await caravan.until(copies_recorded, "the copies to be handled")
    # Inventory and payments have consumed the copies of the topics they read, and ignored
    # them: none dead-lettered, each step of theirs emitted once.
    for service, topics in (
        ("inventory", {Topic.ORDER_EVENTS}),
        ("payments", {Topic.ORDER_EVENTS, Topic.INVENTORY_EVENTS}),
    ):
        await caravan.consumed(service, *(c for c in copies if Topic(c.topic) in topics))
        assert await dead_letters(caravan, service, order_id) == 0
    for service, topic, step in (
        ("inventory", Topic.INVENTORY_EVENTS, "stock.reserved"),
        ("inventory", Topic.INVENTORY_EVENTS, settled),
        ("payments", Topic.PAYMENT_EVENTS, inputs[1]),
    ):
        assert await caravan.outbox_count(service, topic, step, order_id=order_id) == 1, step
    assert await caravan.one_terminal(order_id) == outcome[0]
    steps = await caravan.timeline(order_id)
    assert steps.count("order.placed") == 1
    assert (
        await caravan.scalar(
            "select count(*) from orders.orders where order_ref = :r", r=req.order_ref
        )
        == 1
    )
    placed = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_id=order_id)
    assert len({e.id for e in placed}) == 1
    if first.type == "order.confirmed":
        assert await reservation(caravan, order_id) == "sold"
        assert await active_loans(caravan, order_id) == 1
    else:
        assert await reservation(caravan, order_id) == "released"
        assert await active_loans(caravan, order_id) == 0


# --- a hold that ran out, and the buyer cancelling a pending order ---------------------------


async def test_stock_expired_cancels_a_pending_order_and_after_the_end_publishes_it_again(
    caravan: System,
) -> None:
    """``stock.expired`` of a pending order cancels it (``expired``); of an order that ended
    it is recorded, and the end published again, the same event (inventory applied it
    already here, as when the report crossed the sale: it drops it, the hold stays sold)."""
    done = order()
    await caravan.request(done)
    done_id = await caravan.placed(done.order_ref)
    assert (await caravan.outcome(done_id)).type == "order.confirmed"
    await emit_as(caravan, StockExpired(order_id=done_id), "inventory")

    async with payments_stopped(caravan):
        held = await caravan.client.post(
            "/orders", json=body(), headers={"Idempotency-Key": ref("ORD")}
        )
        by_buyer = await caravan.client.post(
            "/orders", json=body(), headers={"Idempotency-Key": ref("ORD")}
        )
        assert held.status_code == by_buyer.status_code == 202
        held_id, buyer_id = held.json()["order_id"], by_buyer.json()["order_id"]
        await reserved(caravan, held_id)
        await reserved(caravan, buyer_id)

        await emit_as(caravan, StockExpired(order_id=held_id), "inventory")
        expired = await caravan.outcome(held_id)
        assert (expired.type, expired.data["reason"]) == ("order.cancelled", "expired")

        cancelled = await caravan.client.post(f"/orders/{buyer_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert (cancelled.json()["status"], cancelled.json()["reason"]) == (
            "cancelled",
            "cancelled_by_buyer",
        )
        again = await caravan.client.post(f"/orders/{buyer_id}/cancel")
        assert again.status_code == 200 and again.json()["reason"] == "cancelled_by_buyer"
        outcome = await caravan.outcome(buyer_id)
        assert outcome.data["reason"] == "cancelled_by_buyer"

    await caravan.until(
        lambda: recorded(caravan, done_id, "stock.expired"),
        "stock.expired recorded on the confirmed order",
    )
    ends = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.confirmed", order_id=done_id),
        count=2,
    )
    assert len({e.id for e in ends}) == 1
    assert await caravan.one_terminal(done_id) == "order.confirmed"
    assert await reservation(caravan, done_id) == "sold"
    for order_id in (held_id, buyer_id):
        await compensated(caravan, order_id)
        assert await caravan.one_terminal(order_id) == "order.cancelled"


async def test_a_cancelled_orders_timeline_ends_with_the_void_of_a_late_authorisation(
    caravan: System,
) -> None:
    """Payments down while the buyer cancels a pending order: started again, it reads the
    order's ``stock.reserved`` and ``order.cancelled`` from two topics (a batch handles
    inventory's first), so it lends and then voids the loan. The authorisation reaches the
    ended order and is recorded only; the void is recorded after it, so the timeline a
    storefront shows ends with the void, not with a payment authorised. Orders says the late
    authorisation in its log, not the void, which always comes after the order's end."""
    log = caravan.procs.log_dir / "orders.log"
    logged_before = log.stat().st_size
    async with payments_stopped(caravan):
        placed = await caravan.client.post(
            "/orders", json=body(), headers={"Idempotency-Key": ref("ORD-VOID")}
        )
        order_id = placed.json()["order_id"]
        await reserved(caravan, order_id)
        cancelled = await caravan.client.post(f"/orders/{order_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    await order_handled(caravan, "orders", order_id, Topic.PAYMENT_EVENTS)
    view = (await caravan.client.get(f"/orders/{order_id}")).json()
    steps = [step["type"] for step in view["timeline"]]
    assert (view["status"], view["reason"]) == ("cancelled", "cancelled_by_buyer")
    assert steps[-3:] == ["order.cancelled", "payment.authorized", "payment.voided"], steps
    entries = [orjson.loads(line) for line in log.read_bytes()[logged_before:].splitlines()]
    said = [
        entry["message"]
        for entry in entries
        if entry.get("order_id") == order_id and "arrived after" in entry["message"]
    ]
    assert said == ["payment.authorized arrived after the order ended cancelled; recorded only"]
    await compensated(caravan, order_id)


async def test_an_event_about_an_order_orders_never_had_is_counted_by_type(
    caravan: System,
) -> None:
    """A ``stock.rejected`` of an order id orders never had (a forged or stray record on
    inventory's topic) is ignored, as before, and counted by its type: it was only a log
    line, and a stream of them was invisible to monitoring. Counted once, however often it
    is read."""
    unknown = "caravan_orders_unknown_order_events_total"
    before = await caravan.gauge("orders", unknown, type="stock.rejected")
    stray = StockRejected(order_id=str(uuid.uuid4()), reason="out_of_stock", skus=["ORD-PEPPER"])
    event = await emit_as(caravan, stray, "inventory")
    await caravan.handled("orders", event)
    await consumed_again(caravan, "orders", event)  # read twice: its copy is a duplicate

    async def counted() -> float:
        return await caravan.gauge("orders", unknown, type="stock.rejected")

    after = await caravan.until(counted, f"{unknown} past {before}", 10, 0.2, before.__lt__)
    assert after == before + 1
    assert await caravan.timeline(stray.order_id) == []


# --- cancellation racing confirmation --------------------------------------------------------


async def test_cancel_racing_confirmation_ends_each_order_once_and_compensates(
    caravan: System,
) -> None:
    n = 12
    async with payments_stopped(caravan):
        placed = [
            await caravan.client.post(
                "/orders", json=body(), headers={"Idempotency-Key": ref("ORD-RACE")}
            )
            for _ in range(n + 1)
        ]
        ids = [p.json()["order_id"] for p in placed]
        totals = [int((await reserved(caravan, i)).data["total_fen"]) for i in ids]

        def authorized(i: int) -> PaymentAuthorized:
            return PaymentAuthorized(
                order_id=ids[i], buyer_id=RICH["id"], method="microloan",
                amount_fen=totals[i], term_months=3,
            )  # fmt: skip

        # How long an authorisation takes to confirm here: the cancels below are spread from
        # one such time before their authorisation to well after it (a second more, since
        # twelve authorisations at once take longer than one), so that both sides win some
        # of the races, however quick the consumer is against the HTTP API.
        started = asyncio.get_running_loop().time()
        await emit_as(caravan, authorized(n), "payments")
        assert (await caravan.outcome(ids[n])).type == "order.confirmed"
        latency = asyncio.get_running_loop().time() - started

        async def race(i: int) -> int:
            lead = (3 * latency + 1.0) * i / (n - 1) - latency  # the cancel's, < 0: before

            async def authorize() -> None:
                await asyncio.sleep(max(-lead, 0))
                await emit_as(caravan, authorized(i), "payments")

            async def cancel() -> int:
                await asyncio.sleep(max(lead, 0))
                return (await caravan.client.post(f"/orders/{ids[i]}/cancel")).status_code

            _, status = await asyncio.gather(authorize(), cancel())
            return status

        statuses = await asyncio.gather(*(race(i) for i in range(n)))
        outcomes = [await caravan.outcome(i) for i in ids[:n]]

    assert set(statuses) <= {200, 409}
    for order_id, status, outcome in zip(ids[:n], statuses, outcomes, strict=True):
        assert await caravan.one_terminal(order_id) == outcome.type
        if status == 200:
            assert outcome.data["reason"] == "cancelled_by_buyer"
            await compensated(caravan, order_id)
        else:
            assert outcome.type == "order.confirmed"
            await caravan.until(
                functools.partial(reservation_in, caravan, order_id, ("sold",)),
                "the stock of a confirmed order to be sold",
            )
    assert 200 in statuses and 409 in statuses, statuses


async def test_a_cancel_and_a_confirmation_waiting_for_one_order_end_it_once(
    caravan: System,
) -> None:
    """The buyer's cancel and the authorisation that confirms the order both wait for the
    order's row (held locked here), then go on at once: the one that takes the row second
    sees the order ended by the first, and the order has one end, where two readers of the
    row before either wrote it would each end it their way (the race above, made certain)."""
    async with payments_stopped(caravan):
        authorized = await pending(caravan, "ORD-LOCKED")
        order_id = authorized.order_id
        async with caravan.row_locked("orders.orders", "order_id", order_id) as holder:
            await emit_as(caravan, authorized, "payments")
            cancel = asyncio.create_task(caravan.client.post(f"/orders/{order_id}/cancel"))
            await caravan.lock_waiters(holder, "the authorisation and the cancel", 2)
        status = (await cancel).status_code
        await caravan.until(
            lambda: recorded(caravan, order_id, "payment.authorized"),
            "the authorisation handled",
        )
        await caravan.outcome(order_id)  # in the event log too, which one_terminal reads
        ended = await caravan.one_terminal(order_id)
    assert (status, ended) in ((200, "order.cancelled"), (409, "order.confirmed")), status


async def test_an_event_twice_in_one_batch_is_handled_once(caravan: System) -> None:
    """An event published twice, the copies next to each other (a producer's retry), is
    handled once even when both come in one batch: the batch's claim of the inbox takes the
    first copy and counts the second a duplicate, so the order's timeline has it once."""
    async with payments_stopped(caravan):
        authorized = await pending(caravan, "ORD-TWICE")
        order_id = authorized.order_id
        event = new_event(authorized, source="caravan/payments", correlation_id=order_id)
        # Orders down: on its start the two copies are one backlog, taken as one batch.
        await asyncio.to_thread(caravan.procs.stop, ["orders"])
        try:
            for _ in range(2):
                await publish(caravan, event, Topic.PAYMENT_EVENTS, order_id)
        finally:
            await caravan.restart(("orders",))
        assert (await caravan.outcome(order_id)).type == "order.confirmed"
        await order_handled(caravan, "orders", order_id, Topic.PAYMENT_EVENTS)
        # Read before payments starts again: it then authorises the order itself (an event
        # of its own, recorded too).
        steps = await caravan.timeline(order_id)
    assert steps.count("payment.authorized") == 1, steps


# --- the saga deadline -----------------------------------------------------------------------


async def test_deadline_expires_a_pending_order_and_late_rejections_are_only_recorded(
    caravan: System,
) -> None:
    await caravan.restart(("orders",), CARAVAN_SAGA_DEADLINE_SECONDS="2")
    started = caravan.procs.logged["orders"]  # the log's size when it started
    ended = ("orders", "caravan_orders_ended_total")
    expired_before = await caravan.gauge(*ended, status="cancelled", reason="expired")
    try:
        # The stuck list's default threshold follows a deadline shorter than its 300 s: an
        # order pending 300 s would have expired long before.
        stuck = (await caravan.client.get("/ops/stuck-orders")).json()
        assert stuck["older_than_seconds"] == 1.0
        async with payments_stopped(caravan):
            req = order()
            await caravan.request(req)
            order_id = await caravan.placed(req.order_ref)
            held = await reserved(caravan, order_id)
            # Held until the order's deadline (2 s here), not the hold's time (20 minutes):
            # payments, started again, finds it lapsed and lends nothing for it.
            (placed,) = caravan.log.events(
                Topic.ORDER_EVENTS, type="order.placed", order_id=order_id
            )
            assert held.data["held_until"] is not None
            assert datetime.fromisoformat(held.data["held_until"]) == datetime.fromisoformat(
                placed.data["deadline_at"]
            )
            expired = await caravan.outcome(order_id)
            assert (expired.type, expired.data["reason"]) == ("order.cancelled", "expired")
            # Operators see it: counted by status and reason, and a warning naming it.
            assert await caravan.gauge(*ended, status="cancelled", reason="expired") >= (
                expired_before + 1
            )

            def warned() -> list[dict[str, str]]:
                log = (caravan.procs.log_dir / "orders.log").read_bytes()[started:].decode()
                return [orjson.loads(line) for line in log.splitlines() if "past their" in line]

            said = await caravan.wait_for(warned)  # logged just after the commit
            assert [(s["level"], order_id in s["message"]) for s in said] == [("warning", True)]
            body_ = (await caravan.client.get(f"/orders/{order_id}")).json()
            assert (body_["status"], body_["reason"]) == ("cancelled", "expired")
            await emit_as(
                caravan, PaymentDeclined(order_id=order_id, reason="credit_declined"), "payments"
            )
            await emit_as(
                caravan,
                StockRejected(order_id=order_id, reason="out_of_stock", skus=["ORD-PEPPER"]),
                "inventory",
            )
            # Two topics, so either may be handled first.
            await caravan.until(
                lambda: recorded(caravan, order_id, "payment.declined"),
                "the late decline to be recorded",
            )
            await caravan.until(
                lambda: recorded(caravan, order_id, "stock.rejected"),
                "the late rejection to be recorded",
            )
    finally:
        await caravan.restart(("orders",))
    steps = await caravan.timeline(order_id)
    assert steps.index("order.cancelled") < steps.index("payment.declined")
    assert await caravan.one_terminal(order_id) == "order.cancelled"
    await compensated(caravan, order_id)
    final = (await caravan.client.get(f"/orders/{order_id}")).json()
    assert (final["status"], final["reason"]) == ("cancelled", "expired")

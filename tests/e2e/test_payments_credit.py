"""Microloans end to end on real Kafka and PostgreSQL: the credit boundary, concurrent
reservations on two payments instances, voids under duplicated cancellations, repayments."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from shared import days
from shared.events.envelope import CloudEvent, new_event
from shared.events.inventory import ReservedLine, StockReserved
from shared.events.orders import OrderCancelled, OrderRequested, PaymentRequest
from shared.messaging import kafka_admin
from shared.seed import SeedFile
from shared.topics import Topic
from tests.e2e.markers import published
from tests.harness import System, ref

PHONE = "+8613900004001"


def payments_seed() -> SeedFile:
    today = days.today()
    year = timedelta(days=365)
    lot: dict[str, Any] = {
        "quantity": 10**7,
        "available_from": str(today - year),
        "best_before": str(today + year),
    }
    return SeedFile.model_validate(
        {
            "sellers": [
                {"id": s, "name": s, "county": "Shawan", "phone": f"+86130000040{i}"}
                for i, s in enumerate(("pay-seller-1", "pay-seller-2"), start=10)
            ],
            "products": [
                {"sku": sku, "seller_id": seller, "unit_price_fen": fen, "name": {"en": sku}}
                for sku, seller, fen in (
                    ("PAY-UNIT", "pay-seller-1", 100),
                    ("PAY-FEN", "pay-seller-2", 1),
                    ("PAY-BOX", "pay-seller-1", 3500),
                    # Priced 0 by the one test of it (no seed file may say so any more).
                    ("PAY-FREE", "pay-seller-2", 1),
                )
            ],
            "lots": [
                {"lot_id": f"LOT-{sku}", "sku": sku, **lot}
                for sku in ("PAY-UNIT", "PAY-FEN", "PAY-BOX", "PAY-FREE")
            ],
        }
    )


def buyer(name: str) -> str:
    return f"pay-{name}-{uuid.uuid4().hex[:8]}"


def order(
    buyer_id: str, lines: dict[str, int], method: str = "microloan", term: int | None = 3
) -> OrderRequested:
    return OrderRequested.model_validate(
        {
            "order_ref": ref("PAY"),
            "buyer": {"id": buyer_id, "phone": PHONE, "locale": "en"},
            "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
            "payment": {"method": method, "term_months": term if method == "microloan" else None},
        }
    )


async def run(caravan: System, req: OrderRequested) -> CloudEvent:
    await caravan.request(req)
    return await caravan.outcome(await caravan.placed(req.order_ref))


@pytest.fixture
async def admin(caravan: System) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the payments admin API (and the module's reference data loaded)."""
    await caravan.seed(payments_seed())
    async with caravan.api("payments") as client:
        yield client


async def credit(admin: httpx.AsyncClient, buyer_id: str) -> dict[str, Any]:
    response = await admin.get(f"/credit-lines/{buyer_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_limit(admin: httpx.AsyncClient, buyer_id: str, limit: int) -> None:
    response = await admin.put(f"/credit-lines/{buyer_id}", json={"credit_limit_fen": limit})
    assert response.status_code == 200, response.text
    assert response.json()["credit_limit_fen"] == limit


async def test_exactly_the_available_credit_succeeds_and_one_fen_more_is_declined(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    who = buyer("edge")
    await set_limit(admin, who, 10_000)
    over = await run(caravan, order(who, {"PAY-UNIT": 100, "PAY-FEN": 1}))  # 10 001 fen
    assert (over.type, over.data["reason"]) == ("order.cancelled", "credit_declined")
    exact = await run(caravan, order(who, {"PAY-UNIT": 100}))  # 10 000 fen
    assert exact.type == "order.confirmed" and exact.data["total_fen"] == 10_000
    assert await credit(admin, who) == {
        "buyer_id": who,
        "credit_limit_fen": 10_000,
        "outstanding_fen": 10_000,
        "available_fen": 0,
    }
    one_fen = await run(caravan, order(who, {"PAY-FEN": 1}))
    assert (one_fen.type, one_fen.data["reason"]) == ("order.cancelled", "credit_declined")

    raised = await admin.post(f"/credit-lines/{who}/adjustments", json={"delta_fen": 1})
    assert raised.status_code == 200 and raised.json()["available_fen"] == 1
    assert (await run(caravan, order(who, {"PAY-FEN": 1}))).type == "order.confirmed"
    refused = await admin.post(f"/credit-lines/{who}/adjustments", json={"delta_fen": -10_002})
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await credit(admin, who))["credit_limit_fen"] == 10_001
    missing = await admin.get(f"/credit-lines/{buyer('nobody')}")
    assert missing.status_code == 404
    bad = await admin.put(f"/credit-lines/{who}", json={"credit_limit_fen": 1.5})
    assert bad.status_code == 422


async def confirmation_text(caravan: System, order_id: str) -> str:
    """The text telling the buyer (:data:`PHONE`) that the order is confirmed."""
    [told] = await caravan.wait_for(
        lambda: [
            e.data["text"]
            for e in caravan.log.events(
                Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id, to=PHONE
            )
            if "is confirmed" in e.data["text"]
        ]
    )
    return str(told)


async def test_a_loan_of_fewer_fen_than_months_is_lent_over_as_many_months(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """2 fen asked over 3 months was lent in instalments of 1, 1 and 0 fen: one owed nothing,
    never reminded, the text saying 3 instalments. It is lent over 2 months, one fen each,
    and the confirmation and the buyer's text say so."""
    who = buyer("tiny")
    await set_limit(admin, who, 100)
    done = await run(caravan, order(who, {"PAY-FEN": 2}, term=3))
    order_id = done.data["order_id"]
    assert (done.type, done.data["term_months"]) == ("order.confirmed", 2), done.data
    assert [i["amount_fen"] for i in done.data["payment"]["schedule"]] == [1, 1]
    lent = await caravan.sql(
        "select l.term_months, i.number, i.amount_fen from payments.loans l"
        " join payments.instalments i using (loan_id) where l.order_id = :o order by i.number",
        o=order_id,
    )
    assert [tuple(row) for row in lent] == [(2, 1, 1), (2, 2, 1)]
    told = await confirmation_text(caravan, order_id)
    assert "in 2 monthly instalments, the first of CNY 0.01 due on" in told, told


async def test_a_credit_limit_beyond_its_bound_is_refused_set_or_adjusted(
    admin: httpx.AsyncClient,
) -> None:
    """A limit is at most 10^16 fen (shared.seed.MAX_CREDIT_LIMIT_FEN): one up to bigint's
    was taken, and an adjustment past bigint failed in the database, a 500."""
    who = buyer("bound")
    beyond = await admin.put(f"/credit-lines/{who}", json={"credit_limit_fen": 10**16 + 1})
    assert beyond.status_code == 422 and "at most 10000000000000000 fen" in beyond.text
    await set_limit(admin, who, 10**16)
    over = await admin.post(f"/credit-lines/{who}/adjustments", json={"delta_fen": 1})
    assert over.status_code == 409, over.text
    assert "cannot be raised by 1 fen: a credit limit is at most" in over.json()["detail"]
    lowered = await admin.post(f"/credit-lines/{who}/adjustments", json={"delta_fen": -1})
    assert lowered.status_code == 200 and lowered.json()["credit_limit_fen"] == 10**16 - 1


async def settle(caravan: System, req: OrderRequested) -> CloudEvent:
    return await caravan.outcome(await caravan.placed(req.order_ref), timeout=60)


async def _group(bootstrap: str, group: str, topic: Topic) -> tuple[str, list[list[int]]]:
    """The consumer group's state, and each member's partitions of ``topic`` (sorted)."""
    described = await kafka_admin.describe_group(bootstrap, group)
    return described.state, sorted(a.get(topic.value, []) for a in described.assignments)


def _partition(key: str, of: int) -> int:
    """The partition the producer's partitioner gives ``key`` in a topic of ``of``."""
    every = list(range(of))
    return int(DefaultPartitioner()(key.encode(), every, every))


def _order_ids_on(partitions: list[int], of: int, count: int) -> list[str]:
    """``count`` new order ids (the key) on ``partitions`` of a topic of ``of``."""
    found: list[str] = []
    while len(found) < count:
        order_id = str(uuid.uuid4())
        if _partition(order_id, of) in partitions:
            found.append(order_id)
    return found


async def test_concurrent_reservations_on_two_payments_instances_never_exceed_the_limit(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """Nine reservations of 3,500 fen for a buyer whose limit is 17,500, handled at once by
    two payments instances: five authorised, four declined. Their order ids are chosen so
    that each instance's partitions hold some (the group's assignment, the same after), so
    both take part in the race (orders' own ids put all nine on one instance in about 2.6 %
    of runs, when the test proved nothing)."""
    who = buyer("race")
    await set_limit(admin, who, 5 * 3500)
    topic = Topic.INVENTORY_EVENTS
    caravan.procs.start(("payments",), instance=2)
    try:
        # Each instance has one consumer for all its topics: two members when both run.
        _, assigned = await caravan.until(
            lambda: _group(caravan.infra.kafka_bootstrap, "caravan-payments", topic),
            "instance 2 to join: the group stable with two members",
            60,
            every=0.2,
            ready=lambda seen: seen[0] == "Stable" and len(seen[1]) == 2,
        )
        assert all(assigned), assigned  # each instance reads some of inventory's partitions
        assert caravan.producer is not None
        of = len(await caravan.producer.partitions_for(topic.value))
        first, second = (_order_ids_on(partitions, of, 5) for partitions in assigned)
        order_ids = [*first, *second[:4]]
        landed = {_partition(o, of) for o in order_ids}
        assert all(landed & set(p) for p in assigned), (landed, assigned)  # both take part
        reservations = (event(reserved(o, who, 35)) for o in order_ids)  # 3,500 fen each
        await asyncio.gather(
            *(_publish(caravan, e, topic, o) for e, o in zip(reservations, order_ids, strict=True))
        )
        answers = await asyncio.gather(*(payment_answer(caravan, o) for o in order_ids))
        still = await _group(caravan.infra.kafka_bootstrap, "caravan-payments", topic)
        assert still == ("Stable", assigned)  # no rebalance: each instance handled its own
    finally:
        await asyncio.to_thread(caravan.procs.stop, ["payments-2"])
    kinds = sorted((a.type, a.data.get("reason")) for a in answers)
    assert (
        kinds == [("payment.authorized", None)] * 5 + [("payment.declined", "credit_declined")] * 4
    )
    assert await credit(admin, who) == {
        "buyer_id": who,
        "credit_limit_fen": 17_500,
        "outstanding_fen": 17_500,
        "available_fen": 0,
    }
    assert (
        await caravan.scalar(
            "select count(*) from payments.loans where buyer_id = :b and status = 'active'", b=who
        )
        == 5
    )


async def payment_answer(caravan: System, order_id: str) -> CloudEvent:
    """Payments' answer to the order's reservation: authorised or declined."""
    found = await caravan.wait_for(
        lambda: [
            e
            for e in caravan.log.events(Topic.PAYMENT_EVENTS, order_id=order_id)
            if e.type in ("payment.authorized", "payment.declined")
        ],
        timeout=60,
    )
    return found[0]


async def _publish(caravan: System, event: CloudEvent, topic: Topic, key: str) -> None:
    await caravan.publish_raw(topic.value, event.to_json(), key=key.encode())


async def _handled(caravan: System, *events: CloudEvent) -> None:
    """Wait until payments has handled these events (recorded them in its inbox)."""
    keys = [f"{e.source}|{e.id}" for e in events]
    await caravan.until(
        lambda: caravan.scalar("select count(*) from payments.inbox where key = any(:k)", k=keys),
        f"payments to handle all {len(keys)} events",
        ready=lambda found: found == len(keys),
    )


def reserved(
    order_id: str, buyer_id: str, quantity: int, unit_price_fen: int = 100
) -> StockReserved:
    """What inventory says once it holds ``quantity`` of PAY-UNIT for a microloan order."""
    return StockReserved(
        order_id=order_id,
        buyer_id=buyer_id,
        payment=PaymentRequest(method="microloan", term_months=2),
        lines=[
            ReservedLine(
                sku="PAY-UNIT",
                quantity=quantity,
                unit_price_fen=unit_price_fen,
                seller_id="pay-seller-1",
                lots=[],
            )
        ],
        total_fen=unit_price_fen * quantity,
    )


def event(data: StockReserved | OrderCancelled) -> CloudEvent:
    return new_event(data, source="test/payments", correlation_id=data.order_id)


async def authorised(
    caravan: System, who: str, quantity: int, unit_price_fen: int = 100
) -> tuple[str, CloudEvent]:
    """A microloan order's id and its ``payment.authorized``, the reservation published as
    inventory would (so that the test, as orders, decides when the order is cancelled)."""
    order_id = str(uuid.uuid4())
    said = event(reserved(order_id, who, quantity, unit_price_fen))
    await _publish(caravan, said, Topic.INVENTORY_EVENTS, order_id)
    found = await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
        )
    )
    return order_id, found[0]


async def buyers_loan(
    caravan: System, admin: httpx.AsyncClient, name: str
) -> tuple[str, str, CloudEvent]:
    """A new buyer with a credit line of 10,000 fen and an order of 3,000 fen on a 2-month
    microloan, authorised: the buyer, the order id, its ``payment.authorized``."""
    who = buyer(name)
    await set_limit(admin, who, 10_000)
    return who, *await authorised(caravan, who, 30)


async def cancel(caravan: System, order_id: str, copies: int = 1, together: bool = False) -> None:
    """Publish ``copies`` cancellations of the order, as orders would (each twice: a
    redelivery), and wait until payments has handled them all; ``together``: published
    while payments is down, so that they reach it as one batch (checked)."""
    cancelled = OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="expired")
    sent = [event(cancelled) for _ in range(copies)]
    if together:
        await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        for copy in sent + sent:
            await _publish(caravan, copy, Topic.ORDER_EVENTS, order_id)
    finally:
        if together:
            await caravan.restart(("payments",))
    await _handled(caravan, *sent)  # same partition: all copies are handled
    if together:
        assert await caravan.transactions("payments", *sent) == 1


async def test_a_void_restores_credit_once_under_duplicated_cancellations(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    # The saga's events are published as the other services would, so that the order is
    # cancelled after its loan was authorised, and the cancellation delivered many times.
    who, order_id, authorized = await buyers_loan(caravan, admin, "void")
    loan_id = authorized.data["loan_id"]
    assert [i["amount_fen"] for i in authorized.data["schedule"]] == [1500, 1500]
    assert (await credit(admin, who))["available_fen"] == 7_000

    await cancel(caravan, order_id, copies=3)

    assert (await credit(admin, who))["available_fen"] == 10_000
    assert await voided_once(caravan, order_id, loan_id) == 2  # the disbursement, its void


async def payment_voided_once(caravan: System, order_id: str) -> None:
    """Check that the order's payment is voided, said once, and the sellers' payables
    cancelled."""
    assert (
        await caravan.scalar("select status from payments.payments where order_id = :o", o=order_id)
        == "voided"
    )
    voids = await caravan.outbox_count(
        "payments", Topic.PAYMENT_EVENTS, "payment.voided", order_id=order_id
    )
    assert voids == 1
    assert set(
        await caravan.sql("select status from payments.payables where order_id = :o", o=order_id)
    ) == {("cancelled",)}


async def voided_once(caravan: System, order_id: str, loan_id: str) -> int:
    """Check that the order's loan and payment are voided, said once, the loan's ledger
    back to zero and the sellers' payables cancelled; how many ledger transactions the
    loan has."""
    assert tuple(
        (
            await caravan.sql(
                "select status, outstanding_fen from payments.loans where loan_id = :l",
                l=loan_id,
            )
        )[0]
    ) == ("voided", 0)
    await payment_voided_once(caravan, order_id)
    assert (
        await caravan.scalar(
            "select sum(amount_fen) from payments.ledger_entries where loan_id = :l", l=loan_id
        )
        == 0
    )
    return int(
        await caravan.scalar(
            "select count(distinct txn_id) from payments.ledger_entries where loan_id = :l",
            l=loan_id,
        )
    )


async def test_one_batch_of_a_buyers_orders_never_exceeds_the_limit(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    # Published while payments is down, the nine reservations reach it as one backlog and are
    # handled in one transaction: each must see the loans of those before it.
    who = buyer("batch")
    await set_limit(admin, who, 5 * 3_000)
    events = [event(reserved(str(uuid.uuid4()), who, 30)) for _ in range(9)]
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        for e in events:
            await _publish(caravan, e, Topic.INVENTORY_EVENTS, e.data["order_id"])
    finally:
        await caravan.restart(("payments",))
    await _handled(caravan, *events)
    transactions = await caravan.scalar(
        "select count(distinct xmin::text) from payments.inbox where key = any(:k)",
        k=[f"{e.source}|{e.id}" for e in events],
    )
    assert transactions < len(events)  # batched, so this proves what the batch path does
    statuses = await caravan.sql(
        "select status, count(*) from payments.payments where order_id = any(:o) group by status",
        o=[e.data["order_id"] for e in events],
    )
    assert sorted(tuple(row) for row in statuses) == [("authorized", 5), ("declined", 4)]
    assert await credit(admin, who) == {
        "buyer_id": who,
        "credit_limit_fen": 15_000,
        "outstanding_fen": 15_000,
        "available_fen": 0,
    }


async def test_a_batch_of_reservations_and_their_cancellations_voids_each_loan(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    # Published while payments is down, reservations (inventory.events.v1) and then their
    # cancellations (orders.events.v1) reach its one consumer as one backlog, handled in one
    # transaction: the cancellations must see the loans that the reservations made in it.
    who = buyer("mixed")
    await set_limit(admin, who, 10 * 3_000)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    reservations = [event(reserved(order_id, who, 30)) for order_id in ids]
    cancels = [
        event(OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="cancelled_by_buyer"))
        for order_id in ids
    ]
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        for e in reservations:
            await _publish(caravan, e, Topic.INVENTORY_EVENTS, e.data["order_id"])
        for e in cancels:
            await _publish(caravan, e, Topic.ORDER_EVENTS, e.data["order_id"])
    finally:
        await caravan.restart(("payments",))
    await _handled(caravan, *reservations, *cancels)
    mixed = await caravan.scalar(
        "select count(*) from (select 1 from payments.inbox where key = any(:k)"
        " group by xmin::text having count(distinct topic) = 2) t",
        k=[f"{e.source}|{e.id}" for e in reservations + cancels],
    )
    assert mixed >= 1  # a transaction handled records of both topics: the path under test
    statuses = await caravan.sql(
        "select status, count(*) from payments.payments where order_id = any(:o) group by status",
        o=ids,
    )
    assert [tuple(row) for row in statuses] == [("voided", 4)]
    loans = await caravan.sql(
        "select status, count(*) from payments.loans where order_id = any(:o) group by status",
        o=ids,
    )
    assert [tuple(row) for row in loans] == [("voided", 4)]
    assert (await credit(admin, who))["available_fen"] == 30_000


async def test_a_cancellation_before_the_reservation_means_no_loan(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    who = buyer("early")
    await set_limit(admin, who, 10_000)
    order_id = str(uuid.uuid4())
    cancel = event(OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="expired"))
    late = event(reserved(order_id, who, 10))
    await _publish(caravan, cancel, Topic.ORDER_EVENTS, order_id)
    await _handled(caravan, cancel)
    await _publish(caravan, late, Topic.INVENTORY_EVENTS, order_id)
    await _handled(caravan, late)
    assert (
        await caravan.scalar("select count(*) from payments.loans where order_id = :o", o=order_id)
        == 0
    )
    assert (await credit(admin, who))["available_fen"] == 10_000


async def repay(
    admin: httpx.AsyncClient, loan_id: str, key: str, amount: int | None
) -> httpx.Response:
    return await admin.post(
        f"/loans/{loan_id}/repayments",
        json={} if amount is None else {"amount_fen": amount},
        headers={"Idempotency-Key": key},
    )


async def test_repayments_allocate_to_instalments_and_restore_credit(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    who = buyer("repay")
    await set_limit(admin, who, 50_000)
    done = await run(caravan, order(who, {"PAY-UNIT": 100}, term=3))
    loan_id = done.data["payment"]["loan_id"]
    loan = (await admin.get(f"/loans/{loan_id}")).json()
    assert [i["amount_fen"] for i in loan["schedule"]] == [3334, 3333, 3333]
    assert loan["schedule"][0]["due"] > days.today().isoformat()
    assert (loan["outstanding_fen"], loan["remaining_fen"], loan["overdue_fen"]) == (
        10_000,
        10_000,
        0,
    )

    partial = await repay(admin, loan_id, "r1", 1_000)
    assert partial.status_code == 201, partial.text
    assert partial.json()["allocations"] == [
        {"number": 1, "amount_fen": 1_000, "interest_fen": 0, "principal_fen": 1_000}
    ]
    assert partial.json()["loan"]["outstanding_fen"] == 9_000
    assert (await credit(admin, who))["available_fen"] == 41_000
    again = await repay(admin, loan_id, "r1", 1_000)  # a retried request: no second repayment
    assert again.status_code == 200 and again.json()["loan"]["outstanding_fen"] == 9_000
    assert again.json()["allocations"] == partial.json()["allocations"]  # the same repayment
    assert (await repay(admin, loan_id, "r1", 500)).status_code == 409

    early = await repay(admin, loan_id, "r2", 5_000)
    assert [(a["number"], a["amount_fen"]) for a in early.json()["allocations"]] == [
        (1, 2_334),
        (2, 2_666),
    ]
    assert [i["paid_fen"] for i in early.json()["loan"]["schedule"]] == [3334, 2666, 0]
    over = await repay(admin, loan_id, "r3", 4_001)
    assert over.status_code == 422 and over.headers["content-type"] == "application/problem+json"

    full = await repay(admin, loan_id, "r4", None)
    assert full.status_code == 201 and full.json()["amount_fen"] == 4_000
    assert full.json()["loan"]["status"] == "repaid"
    assert full.json()["loan"]["outstanding_fen"] == 0
    assert (await credit(admin, who))["available_fen"] == 50_000
    assert (await repay(admin, loan_id, "r5", 1)).status_code == 409
    assert (await admin.get(f"/loans/{uuid.uuid4()}")).status_code == 404

    repaid = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.repaid", loan_id=loan_id),
        count=3,
    )
    assert [(e.data["amount_fen"], e.data["fully_repaid"]) for e in repaid] == [
        (1_000, False),
        (5_000, False),
        (4_000, True),
    ]
    # Which instalments each paid off (their reminders still waiting are then not sent).
    assert [e.data["settled_instalments"] for e in repaid] == [[], [1], [2, 3]]
    # And what each left on the instalments it paid into (a reminder waiting says that).
    assert [
        [(i["number"], i["remaining_fen"]) for i in e.data["instalments_left"]] for e in repaid
    ] == [[(1, 2_334)], [(1, 0), (2, 667)], [(2, 0), (3, 0)]]
    assert all(e.correlationid == done.data["order_id"] for e in repaid)
    assert (
        await caravan.scalar(
            "select sum(amount_fen) from payments.ledger_entries"
            " where loan_id = :l and account = 'loan_receivable'",
            l=loan_id,
        )
        == 0
    )


async def test_a_loan_repaid_in_full_is_voided_when_its_order_is_cancelled(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    # The buyer repays the whole loan while the order is still pending (orders has not
    # read payment.authorized yet: lagging, or paused), and then the order is cancelled
    # (its deadline, its stock hold run out, or the buyer): a cancelled order holds no
    # loan, the sellers are not paid for it, and the buyer is owed back what they paid.
    who, order_id, authorized = await buyers_loan(caravan, admin, "repaid")
    loan_id = authorized.data["loan_id"]
    paid = await repay(admin, loan_id, "all", None)
    assert (paid.json()["amount_fen"], paid.json()["loan"]["status"]) == (3_000, "repaid")

    await cancel(caravan, order_id, copies=2)

    assert await voided_once(caravan, order_id, loan_id) == 3  # disbursed, repaid, voided
    owed = await caravan.scalar(
        "select sum(amount_fen) from payments.ledger_entries"
        " where loan_id = :l and account = 'buyer_refund_payable'",
        l=loan_id,
    )
    assert owed == -3_000
    assert (await credit(admin, who))["available_fen"] == 10_000
    assert (await repay(admin, loan_id, "late", 1)).status_code == 409


async def test_what_a_voided_loans_buyer_repaid_is_shown_as_owed_back(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    # Operations must pay it back: payment.voided says how much, and so does the loan.
    _, order_id, authorized = await buyers_loan(caravan, admin, "refund")
    loan_id = authorized.data["loan_id"]
    assert (await admin.get(f"/loans/{loan_id}")).json().get("refund_owed_fen") == 0
    assert (await repay(admin, loan_id, "part", 1_200)).status_code == 201

    await cancel(caravan, order_id)

    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert (voided[0].data["amount_fen"], voided[0].data.get("refund_owed_fen")) == (3_000, 1_200)
    loan = (await admin.get(f"/loans/{loan_id}")).json()
    assert (loan["status"], loan["remaining_fen"], loan.get("refund_owed_fen")) == (
        "voided",
        0,
        1_200,
    )
    # Its payment says it too, as a void_refused charge's does, and so does the list an
    # operator finds the buyers owed back in (both said null: nothing owed).
    payment = (await admin.get(f"/orders/{order_id}/payment")).json()
    assert (payment["status"], payment["refund_owed_fen"]) == ("voided", 1_200)
    listed = await admin.get("/payments", params={"status": "voided", "limit": 100})
    found = [p["refund_owed_fen"] for p in listed.json()["items"] if p["order_id"] == order_id]
    assert found == [1_200], listed.text


async def test_a_voided_loan_s_repayments_refunded_by_hand_are_recorded_and_said_once(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """Operations paid back by hand what the buyer repaid on a loan since voided, and record
    it as a charge's refund is (``POST /orders/{id}/payment/refund``): the payment is
    ``refunded``, the loan owes nothing back, the ledger pays it out of the repayments, and
    it is said once (``payment.refunded``, naming the loan); the same again changes nothing.
    (Nothing could record it: the loan showed it owed for ever, and no event said it paid.)"""
    _, order_id, authorized = await buyers_loan(caravan, admin, "loan-refund")
    loan_id = authorized.data["loan_id"]
    route = f"/orders/{order_id}/payment/refund"
    made = {"reference": "BANK-LOAN-0001", "reason": "bank transfer"}
    early = await admin.post(route, json=made)  # the loan stands: nothing owed back
    assert early.status_code == 409, early.text
    assert (await repay(admin, loan_id, "part", 1_200)).status_code == 201
    await cancel(caravan, order_id)
    await caravan.wait_for(  # voided: what was repaid owed back
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    owed = await loans_owed_gauged(caravan, "the loan owing back counted")
    assert owed >= 1
    first = await admin.post(route, json=made)
    assert first.status_code == 200, first.text
    done = first.json()
    assert (done["status"], done["loan_id"], done["refund_owed_fen"], done["applied"]) == (
        "refunded",
        loan_id,
        1_200,
        True,
    )
    assert done["refunded_by"].startswith("test-session-"), done
    again = await admin.post(route, json=made)  # the answer lost: nothing changed, it says
    assert (again.status_code, again.json()) == (200, {**done, "applied": False})
    listed = await admin.get("/payments", params={"status": "refunded", "limit": 100})
    found = [p["refund_owed_fen"] for p in listed.json()["items"] if p["order_id"] == order_id]
    assert found == [1_200], listed.text  # what was paid back, not the loan's 3000
    loan = (await admin.get(f"/loans/{loan_id}")).json()
    assert (loan["status"], loan["refund_owed_fen"]) == ("voided", 0)
    paid = await caravan.sql(
        "select account, amount_fen from payments.ledger_entries"
        " where txn_id = :t and kind = 'loan_refunded' and loan_id = :l order by account",
        t=f"refund:{order_id}",
        l=loan_id,
    )
    assert [tuple(r) for r in paid] == [
        ("buyer_refund_payable", 1_200),
        ("repayments_cash", -1_200),
    ]
    await published(caravan, "payments", order_id, Topic.PAYMENT_EVENTS)
    said = caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.refunded", order_id=order_id)
    assert [(e.data["loan_id"], e.data["amount_fen"]) for e in said] == [(loan_id, 1_200)]
    # The gauge the alert watches counts it no longer, from the next sample on (5 s).
    assert await loans_owed_gauged(caravan, "the loan refunded no longer counted") == owed - 1


async def loans_owed_gauged(caravan: System, what: str) -> float:
    """The gauge the alert ``CaravanPaymentLoanRefundOwed`` watches, once it counts the
    voided loans owing their buyer back now (at most two samples of 5 s)."""
    owed = (
        "select count(*) from payments.payments"
        " where status = 'voided' and refund_owed_fen is not null"
    )
    counted = float(await caravan.scalar(owed))

    async def gauged() -> float:
        return await caravan.gauge("payments", "caravan_payments_loans_owed_back")

    return await caravan.until(gauged, f"{what}: {counted}", 15, 0.5, counted.__eq__)


async def test_a_microloan_order_of_0_fen_is_confirmed_without_a_loan(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    # Goods priced 0 (a seed could load them before such prices were refused; the database
    # holds them still): nothing to lend, so no loan and no credit check (this buyer has no
    # credit line), and the order goes through.
    await caravan.execute("update inventory.products set unit_price_fen = 0 where sku = 'PAY-FREE'")
    who = buyer("free")
    done = await run(caravan, order(who, {"PAY-FREE": 2}))
    assert (done.type, done.data.get("reason"), done.data.get("total_fen")) == (
        "order.confirmed",
        None,
        0,
    )
    assert done.data["payment"]["method"] == "microloan"
    assert done.data["payment"].get("loan_id") is None
    payment = (await admin.get(f"/orders/{done.data['order_id']}/payment")).json()
    assert (payment["status"], payment["amount_fen"], payment["loan_id"]) == ("authorized", 0, None)

    # Cancelled once authorised: voided, said once, nothing owed back.
    order_id, authorized = await authorised(caravan, who, 2, unit_price_fen=0)
    assert authorized.data.get("loan_id") is None
    await cancel(caravan, order_id, copies=2, together=True)
    await payment_voided_once(caravan, order_id)
    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert (voided[0].data["amount_fen"], voided[0].data.get("refund_owed_fen")) == (0, None)
    assert (
        await caravan.scalar("select count(*) from payments.loans where buyer_id = :b", b=who) == 0
    )


async def test_each_audited_adjustment_starts_from_the_limit_it_changed(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """Adjustments at once: each audit row's *before* plus its delta is its *after* (the
    before was read ahead of the lock, so several rows named the same before)."""
    who = buyer("audit")
    await set_limit(admin, who, 10_000)
    answers = await asyncio.gather(
        *(
            admin.post(
                f"/credit-lines/{who}/adjustments",
                json={"delta_fen": 100},
                headers={"Idempotency-Key": f"audit-{n}"},
            )
            for n in range(12)
        )
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert (await credit(admin, who))["credit_limit_fen"] == 11_200
    rows = await caravan.sql(
        "select before, after from auth.audit where action = 'credit.adjust' and target = :b",
        b=who,
    )
    steps = sorted((r.before["credit_limit_fen"], r.after["credit_limit_fen"]) for r in rows)
    assert steps == [(10_000 + 100 * n, 10_100 + 100 * n) for n in range(12)]


async def test_a_buyer_id_with_an_empty_segment_is_refused_not_a_second_line(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """``PUT /credit-lines/b1/`` made a line ``b1/`` beside ``b1`` (200, audited), and
    ``POST /credit-lines/b1//adjustments`` adjusted it: the buyer's own line unchanged."""
    who = buyer("slash")
    await set_limit(admin, who, 1_000)
    for path in (f"/{who}/", f"//{who}", f"/a//{who}"):
        put = await admin.put(f"/credit-lines{path}", json={"credit_limit_fen": 5})
        assert put.status_code == 422, (path, put.text)
        assert put.json()["errors"][0]["field"] == "path.buyer_id"
    adjust = await admin.post(f"/credit-lines/{who}//adjustments", json={"delta_fen": 5})
    assert adjust.status_code == 422, adjust.text
    assert (await credit(admin, who))["credit_limit_fen"] == 1_000
    lines = "select count(*) from payments.credit_lines where buyer_id like :b"
    assert await caravan.scalar(lines, b=f"%{who}%") == 1


async def test_concurrent_first_limits_audit_the_line_each_found_and_a_repeat_none(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """Six PUTs at once on a buyer with no line: each audit row said ``before: null`` (a
    lock on a row not there yet locks nothing); one created the line, five changed it. The
    same limit again wrote a row whose before was its after."""
    who = buyer("first")
    limits = [5, 6, 7, 8, 9, 10]
    answers = await asyncio.gather(
        *(admin.put(f"/credit-lines/{who}", json={"credit_limit_fen": n}) for n in limits)
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    rows = await caravan.sql(
        "select before, after from auth.audit where action = 'credit.set' and target = :b"
        " order by id",
        b=who,
    )
    chain = [(r.before and r.before["credit_limit_fen"], r.after["credit_limit_fen"]) for r in rows]
    assert [b for b, _ in chain].count(None) == 1, chain
    assert [b for b, _ in chain[1:]] == [a for _, a in chain[:-1]], chain
    last = (await credit(admin, who))["credit_limit_fen"]
    assert chain[-1][1] == last
    await set_limit(admin, who, last)
    count = "select count(*) from auth.audit where action = 'credit.set' and target = :b"
    assert await caravan.scalar(count, b=who) == 6

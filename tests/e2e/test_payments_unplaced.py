"""An operator voids the money held for an order the orders service never had
(``caravan payments void-unplaced``, ``POST /orders/{id}/payment/void``): what a forged
``stock.reserved``, or a copy of a platform's order under another id, made payments lend or
take, undone as the order's cancellation would undo it, on real Kafka and PostgreSQL."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest

from caravan.output import at
from caravan.reliability.history import check_money, read_database
from shared.events.envelope import new_event
from shared.events.orders import Buyer, OrderLine, OrderPlaced, PaymentRequest
from shared.topics import Topic
from tests.e2e.test_ops import cli as caravan_cli
from tests.e2e.test_payments_credit import (
    PHONE,
    buyer,
    buyers_loan,
    credit,
    event,
    order,
    payments_seed,
    repay,
    reserved,
    run,
    set_limit,
)
from tests.e2e.test_payments_gateway import _paid_on_platform, _publish, _reserved, _until_status
from tests.harness import System, ref

MALL = "platform/test-mall"


@pytest.fixture
async def admin(caravan: System) -> AsyncIterator[httpx.AsyncClient]:
    """The payments admin API, the payments tests' sellers and products loaded."""
    await caravan.seed(payments_seed())
    async with caravan.api("payments") as client:
        yield client


async def cli(caravan: System, *args: str, void: str = "void-unplaced") -> tuple[int, str]:
    """``caravan payments void-unplaced ARGS`` (or ``void``, another command beside it): its
    exit code, and what it said."""
    url = f"http://127.0.0.1:{caravan.port('payments')}"
    done = await caravan_cli(caravan, "payments", void, "--url", url, *args)
    return done.returncode, done.stdout + done.stderr


async def holding(caravan: System, order_id: str) -> list[str]:
    """What the history checker says is held for ``order_id`` without an order."""
    assert caravan.engine is not None
    db = await read_database(caravan.engine)
    return [
        v.evidence
        for v in check_money(db)
        if v.check == "money_without_an_order" and v.subject == order_id
    ]


async def payment(caravan: System, order_id: str) -> dict[str, Any]:
    async with caravan.api("payments") as api:
        got = await api.get(f"/orders/{order_id}/payment")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def audited(
    caravan: System, order_id: str, action: str = "payment.void_unplaced"
) -> list[tuple[Any, ...]]:
    """The audit trail's voids of the order's payment (``action``): the reason, what orders
    answered, the payment's status before and after."""
    rows = await caravan.sql(
        "select detail->>'reason', detail->>'orders_answered', before->>'status',"
        " after->>'status' from auth.audit where action = :a and target = :o order by id",
        o=order_id,
        a=action,
    )
    return [tuple(r) for r in rows]


async def booked(caravan: System, order_id: str, account: str) -> int:
    """What the ledger holds for ``order_id`` in ``account`` (a LIKE pattern), in fen."""
    return int(
        await caravan.scalar(
            "select sum(amount_fen) from payments.ledger_entries where order_id = :o"
            " and account like :a",
            o=order_id,
            a=account,
        )
    )


async def loan_voided(
    caravan: System, admin: httpx.AsyncClient, who: str, loan_id: str, cli_said: tuple[int, str]
) -> None:
    """The void command (``cli_said``: what it answered) voided ``who``'s loan, of which they
    had repaid 1,000 fen: it said so, the buyer's credit is whole (10,000 fen), the loan
    owes the 1,000 fen back and none of its instalments is left to remind."""
    code, said = cli_said
    assert code == 0, said
    assert said.startswith("voided: order ") and f": loan {loan_id} (active)" in said, said
    assert said.rstrip().endswith("(payment voided)"), said
    assert (await credit(admin, who))["available_fen"] == 10_000
    loan = (await admin.get(f"/loans/{loan_id}")).json()
    assert (loan["status"], loan["outstanding_fen"], loan["refund_owed_fen"]) == ("voided", 0, 1000)
    not_done = await caravan.scalar(
        "select count(*) from payments.instalments where loan_id = :l and not reminders_done",
        l=loan_id,
    )
    assert not_done == 0, "instalments of the voided loan still to be reminded"


async def lent_once(caravan: System, admin: httpx.AsyncClient, who: str, order_id: str) -> None:
    """The order's loan (voided) is its only one, authorised once, the payment still voided
    and the buyer's credit whole (10,000 fen): nothing lent again."""
    loans = "select count(*) from payments.loans where order_id = :o"
    assert await caravan.scalar(loans, o=order_id) == 1
    assert (await payment(caravan, order_id))["status"] == "voided"
    authorised = "payment.authorized"
    assert (
        await caravan.outbox_count("payments", Topic.PAYMENT_EVENTS, authorised, order_id=order_id)
        == 1
    )
    assert (await credit(admin, who))["available_fen"] == 10_000


async def test_a_forged_reservations_loan_is_voided_its_credit_given_back_nothing_due(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """A ``stock.reserved`` of an order orders never had lent the buyer 3,000 fen (they repaid
    1,000 of it): the operation voids the loan, gives the credit back, leaves no instalment
    due or reminded, owes the repaid 1,000 fen back, cancels the sellers' payables and says
    ``payment.voided`` (``unplaced``), which orders and notifications take and ignore
    (neither dead-letters it, nor parks it for an ``order.placed``; notifications drops the
    repayment it parked for one). The 1,000 fen paid back by hand, its ``payment.refunded``
    says ``unplaced`` too, and is parked for nothing either. Asked again it voids
    nothing twice; a reservation of the order read after it (a redelivery, or a genuine one
    come late) lends nothing again."""
    who, order_id, authorized = await buyers_loan(caravan, admin, "unplaced")
    loan_id = authorized.data["loan_id"]
    assert (await repay(admin, loan_id, "unplaced-1", 1_000)).status_code == 201
    assert (await credit(admin, who))["available_fen"] == 8_000
    held = await holding(caravan, order_id)
    assert len(held) == 1 and f"loan {loan_id} active, 2000 fen outstanding" in held[0], held

    code, said = await cli(caravan, order_id, "--reason", "forged stock.reserved", "--dry-run")
    assert code == 0, said
    assert said.splitlines() == [
        f"would void: order {order_id}: loan {loan_id} (active) of 3000 fen, voided: 2000 fen"
        " of credit given back, no instalment due, the 1000 fen the buyer repaid owed back to"
        " them"
    ], said
    assert (await payment(caravan, order_id))["status"] == "authorized", "a dry run voided it"
    assert await audited(caravan, order_id) == []

    await loan_voided(
        caravan,
        admin,
        who,
        loan_id,
        await cli(caravan, order_id, "--reason", "forged stock.reserved"),
    )
    seen = await payment(caravan, order_id)
    assert (seen["status"], seen["unplaced_reason"]) == ("voided", "forged stock.reserved")
    assert seen["unplaced_by"] and seen["unplaced_at"]
    payables = await caravan.sql(
        "select distinct status from payments.payables where order_id = :o", o=order_id
    )
    assert [tuple(r) for r in payables] == [("cancelled",)]
    [voided] = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert (voided.data["loan_id"], voided.data["refund_owed_fen"]) == (loan_id, 1000)
    assert await audited(caravan, order_id) == [
        ("forged stock.reserved", "404", "authorized", "voided")
    ]
    assert await holding(caravan, order_id) == []
    # Orders knows no such order and notifications no buyer: each takes it and goes on,
    # notifications waiting for no order.placed of it (unplaced: none comes), nothing parked.
    assert voided.data.get("unplaced") is True, voided.data
    for schema in ("orders", "notifications"):
        await caravan.handled(schema, voided)
    waiting = "select count(*) from notifications.parked where order_id = :o"
    assert await caravan.scalar(waiting, o=order_id) == 0

    # Again: answered as it is, nothing voided or said twice.
    code, said = await cli(caravan, order_id, "--reason", "another reason")
    assert code == 0, said
    assert "voided before" in said and "(forged stock.reserved); nothing changed" in said, said
    async with caravan.api("payments") as api:
        again = await api.post(
            f"/orders/{order_id}/payment/void", json={"reason": "again", "orders_answered": 404}
        )
    assert again.status_code == 200, again.text
    assert (again.json()["applied"], again.json()["unplaced_reason"]) == (
        False,
        "forged stock.reserved",
    )
    # Asked as a confirmed order's refund after the sale: 409, saying how and when it was
    # voided, nothing changed.
    async with caravan.api("payments") as api:
        body = {"reason": "refunded", "orders_answered": "confirmed"}
        other = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert other.status_code == 409, other.text
    # voided, not still charged, as "Payment not voided" read
    assert other.json()["title"] == "Payment voided already, the other way", other.json()
    assert other.json()["detail"] == (
        f"the payment of order {order_id} was voided as of an order the orders service never"
        f" had (orders_answered 404: `void-unplaced`) at {at(seen['unplaced_at'])} by"
        f" {seen['unplaced_by']} (forged stock.reserved); asked now after the sale, its order"
        " confirmed, it is not voided again: nothing changed"
    ), other.json()
    assert await audited(caravan, order_id, "payment.void_after_sale") == []
    assert len(await audited(caravan, order_id)) == 1
    voids = "payment.voided"
    assert (
        await caravan.outbox_count("payments", Topic.PAYMENT_EVENTS, voids, order_id=order_id) == 1
    )

    # A reservation of the order read after the void lends nothing again.
    late = event(reserved(order_id, who, 30))
    await _publish(caravan, late, Topic.INVENTORY_EVENTS)
    await caravan.handled("payments", late)
    await lent_once(caravan, admin, who, order_id)

    # The 1,000 fen owed back paid by hand: its payment.refunded says unplaced too, and
    # notifications, which has no buyer to tell, parks it for no order.placed either.
    route = f"/orders/{order_id}/payment/refund"
    made = {"reference": "BANK-UNPLACED-1", "reason": "bank transfer"}
    assert (await admin.post(route, json=made)).status_code == 200
    [refunded] = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.refunded", order_id=order_id)
    )
    assert refunded.data.get("unplaced") is True, refunded.data
    await caravan.handled("notifications", refunded)
    assert await caravan.scalar(waiting, o=order_id) == 0


async def test_an_order_placed_after_the_void_is_never_lent_for(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """The race chosen: an ``order.placed`` of the voided order's id coming after the void (a
    genuine order whose events came late) has inventory reserve its stock, and payments,
    reading that ``stock.reserved``, lends nothing: the void is for good, and such an order
    expires unpaid (its hold lapsing at its deadline)."""
    who, order_id, _ = await buyers_loan(caravan, admin, "unplaced-late")
    async with caravan.api("payments") as api:
        body = {"reason": "forged", "orders_answered": 404}
        voided = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert voided.status_code == 200, voided.text
    placed = OrderPlaced(
        order_id=order_id,
        order_ref=ref("PAY"),
        source="storefront/test",
        buyer_id=who,
        lines=[OrderLine(sku="PAY-UNIT", quantity=30)],
        buyer=Buyer(id=who, phone=PHONE, locale="en"),
        payment=PaymentRequest(method="microloan", term_months=2),
        deadline_at=datetime.now(UTC) + timedelta(seconds=30),
    )
    await caravan.publish(placed)
    [reservation] = await caravan.wait_for(
        lambda: [
            e
            for e in caravan.log.events(Topic.INVENTORY_EVENTS, order_id=order_id)
            if e.type == "stock.reserved" and e.source != "test/payments"
        ]
    )
    await caravan.handled("payments", reservation)
    await lent_once(caravan, admin, who, order_id)


async def test_a_platform_copys_collection_is_reversed_and_its_sellers_owed_nothing(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """A copy of a platform's paid order under another order id: authorised as collected by
    the platform, its sellers owed. Voided: the collection reversed in the ledger, the
    payables cancelled, ``payment.voided`` of what was collected."""
    who, order_ref, copy = buyer("unplaced-mall"), ref("PAY"), str(uuid.uuid4())
    await _paid_on_platform(caravan, order_ref)
    forged = _reserved(copy, who, source=MALL, order_ref=order_ref)
    await _publish(caravan, new_event(forged, source="test/payments"), Topic.INVENTORY_EVENTS)
    await _until_status(caravan, copy, "authorized")
    assert any("sellers owed {'pay-seller-1': 3500}" in e for e in await holding(caravan, copy))

    async with caravan.api("payments") as api:
        body = {"reason": "copy of a platform order", "orders_answered": 404}
        done = await api.post(f"/orders/{copy}/payment/void", json=body)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["applied"]) == ("voided", True)
    owed = "select count(*) from payments.payables where order_id = :o and status <> 'cancelled'"
    assert await caravan.scalar(owed, o=copy) == 0
    assert await booked(caravan, copy, "platform_clearing:test-mall") == 0
    [voided] = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=copy)
    )
    assert voided.data["amount_fen"] == 3500
    assert await holding(caravan, copy) == []


async def test_each_payment_awaiting_a_platform_s_word_is_booked_when_it_comes(
    caravan: System,
) -> None:
    """Two payments awaiting the platform's word for one of its orders (the order and a copy
    of it under another id, reserved before the platform was paid): its platform.order_paid
    made both authorised, but booked one, the other's collection never posted, its sellers
    never owed and no payment.authorized said, so that, were it the order orders has, a
    paid order expired. Each is booked as the one a copy reserved after the word is."""
    who, order_ref = buyer("unplaced-twice"), ref("PAY")
    both = [str(uuid.uuid4()), str(uuid.uuid4())]
    for order_id in both:
        copy = _reserved(order_id, who, source=MALL, order_ref=order_ref)
        await _publish(caravan, new_event(copy, source="test/payments"), Topic.INVENTORY_EVENTS)
        await _until_status(caravan, order_id, "awaiting")
    await _paid_on_platform(caravan, order_ref)
    for order_id in both:  # booked, if at all, in the transaction that authorised it
        await _until_status(caravan, order_id, "authorized")
    assert caravan.engine is not None
    db = await read_database(caravan.engine)
    wrong = [(v.check, v.subject) for v in check_money(db) if v.subject in both]
    assert sorted(wrong) == sorted(("money_without_an_order", o) for o in both)
    for order_id in both:
        assert await booked(caravan, order_id, "platform_clearing:test-mall") == 3500
        said = partial(caravan.log.events, Topic.PAYMENT_EVENTS, type="payment.authorized")
        await caravan.wait_for(partial(said, order_id=order_id))


async def test_a_forged_prepaid_charge_is_voided_at_the_gateway(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """A prepaid charge the gateway approved for an order orders never had: handed to the
    gateway loop as ``voiding``, voided by key, the charge reversed."""
    who, order_id = buyer("unplaced-prepaid"), str(uuid.uuid4())
    forged = _reserved(order_id, who)
    await _publish(caravan, new_event(forged, source="test/payments"), Topic.INVENTORY_EVENTS)
    await _until_status(caravan, order_id, "authorized")
    async with caravan.api("payments") as api:
        body = {"reason": "forged", "orders_answered": 404}
        done = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert done.status_code == 200, done.text
    assert done.json()["status"] in ("voiding", "voided"), done.text
    await _until_status(caravan, order_id, "voided")
    assert await booked(caravan, order_id, "seller_payable:%") == 0
    assert await holding(caravan, order_id) == []


async def test_an_order_orders_has_is_refused_and_ops_is_needed(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """An order the orders service has is `caravan orders cancel`'s: the command refuses it,
    voiding nothing. A token without the scope ops is refused the route (403). A payment
    holding nothing is refused (409), one of no order 404."""
    who = buyer("unplaced-real")
    await set_limit(admin, who, 10_000)
    done = await run(caravan, order(who, {"PAY-UNIT": 10}))
    assert done.type == "order.confirmed"
    order_id = done.data["order_id"]
    code, said = await cli(caravan, order_id, "--reason", "mistaken")
    assert code == 1, said
    assert f"the orders service has order {order_id} (confirmed)" in said, said
    assert (await payment(caravan, order_id))["status"] == "authorized"
    assert (await credit(admin, who))["available_fen"] == 9_000

    _, forged, _ = await buyers_loan(caravan, admin, "unplaced-auth")
    body = {"reason": "forged", "orders_answered": 404}
    name = f"no-ops-{uuid.uuid4().hex[:6]}"
    token = await caravan.issue_token(name, "credit:write", "credit:read", "orders:read")
    async with caravan.api("payments", token=token) as api:
        refused = await api.post(f"/orders/{forged}/payment/void", json=body)
    assert refused.status_code == 403, refused.text
    assert (await payment(caravan, forged))["status"] == "authorized"
    async with caravan.api("payments") as api:
        unsaid = await api.post(f"/orders/{forged}/payment/void", json={"reason": "forged"})
        assert unsaid.status_code == 422, unsaid.text  # orders_answered is required
        missing = await api.post(f"/orders/{uuid.uuid4()}/payment/void", json=body)
        assert missing.status_code == 404, missing.text
        declined = buyer("unplaced-declined")  # no credit line: declined, nothing held
        nothing = str(uuid.uuid4())
        await _publish(caravan, event(reserved(nothing, declined, 1)), Topic.INVENTORY_EVENTS)
        await _until_status(caravan, nothing, "declined")
        holds_nothing = await api.post(f"/orders/{nothing}/payment/void", json=body)
    assert holds_nothing.status_code == 409, holds_nothing.text
    assert holds_nothing.json()["title"] == "Payment not voided", holds_nothing.json()
    assert "is declined: it holds no money to void" in holds_nothing.json()["detail"]

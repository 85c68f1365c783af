"""An operator voids the payment of a confirmed order whose buyer was refunded after the sale
(``caravan payments void-sold``, ``POST /orders/{id}/payment/void`` with ``"orders_answered":
"confirmed"``): Caravan's books no longer keep a sale whose money went back to the buyer; the
order stays confirmed, its stock sold; on real Kafka and PostgreSQL."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from caravan.output import at
from caravan.reliability.history import check_money, read_database
from shared.topics import Topic
from tests.e2e.markers import order_handled, published
from tests.e2e.test_ops import cli as caravan_cli
from tests.e2e.test_payments_credit import buyer, order, repay, run, set_limit
from tests.e2e.test_payments_gateway import (
    MALL,
    _paid_on_platform,
    _requested_by_adapter,
    _until_status,
    charge_unanswered,
    gateway,
    refund_texted,
)
from tests.e2e.test_payments_unplaced import audited, booked, loan_voided, payment
from tests.e2e.test_payments_unplaced import cli as void_cli
from tests.harness import System

__all__ = ["gateway"]  # the simulator, and payments restarted to call it (module-scoped)


@pytest.fixture
async def admin(caravan: System, gateway: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The payments admin API, payments calling the gateway simulator."""
    async with caravan.api("payments") as client:
        yield client


async def cli(caravan: System, *args: str) -> tuple[int, str]:
    """``caravan payments void-sold ARGS``: its exit code, and what it said."""
    return await void_cli(caravan, *args, void="void-sold")


async def void(caravan: System, order_id: str, reason: str) -> dict[str, Any]:
    async with caravan.api("payments") as api:
        body = {"reason": reason, "orders_answered": "confirmed"}
        done = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert done.status_code == 200, done.text
    answer: dict[str, Any] = done.json()
    return answer


async def money_checks(caravan: System, *subjects: str) -> list[str]:
    """What the history checker's money checks say of ``subjects`` (an order, its loan)."""
    assert caravan.engine is not None
    db = await read_database(caravan.engine)
    return [f"{v.check}: {v.evidence}" for v in check_money(db) if v.subject in subjects]


async def still_confirmed(caravan: System, order_id: str) -> dict[str, Any]:
    """The order as orders shows it once it has read its ``payment.voided``: confirmed still,
    its stock sold, its last step the void after the sale."""
    [voided] = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    for schema in ("orders", "notifications"):
        await caravan.handled(schema, voided)
    shown: dict[str, Any] = (await caravan.client.get(f"/orders/{order_id}")).json()
    assert shown["status"] == "confirmed", shown
    last = shown["timeline"][-1]
    assert (last["type"], last["after_sale"]) == ("payment.voided", True), shown["timeline"]
    assert not any(s["after_sale"] for s in shown["timeline"][:-1]), shown["timeline"]
    assert await caravan.one_terminal(order_id) == "order.confirmed"
    hold = "select status from inventory.reservations where order_id = :o"
    assert await caravan.scalar(hold, o=order_id) == "sold"  # produce is not returned
    return shown


async def test_a_confirmed_microloan_order_s_payment_is_voided_after_the_sale(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """A confirmed order lent 3,000 fen, 1,000 of it repaid; its buyer refunded after the
    sale: `caravan payments void-sold` voids the loan, gives the credit back, leaves no
    instalment to remind, owes the repaid 1,000 fen back, cancels the sellers' payables and
    balances the ledger; audited, kept on the payment; the order stays confirmed and its
    timeline says the void after the sale, then the refund recorded by hand, of which the
    buyer is texted. Asked again: nothing changed. (The payments API answered 409 for such an
    order, and the books kept the sale.)"""
    who = buyer("after-sale")
    await set_limit(admin, who, 10_000)
    req = order(who, {"PAY-UNIT": 30})
    done = await run(caravan, req)
    assert done.type == "order.confirmed", done
    order_id = done.data["order_id"]
    loan_id = (await payment(caravan, order_id))["loan_id"]
    assert (await repay(admin, loan_id, "after-sale-1", 1_000)).status_code == 201
    assert await money_checks(caravan, order_id, loan_id) == []
    # Recording the refund first is refused, naming the way.
    made = {"reference": "BANK-SOLD-0001", "reason": "bank transfer"}
    early = await admin.post(f"/orders/{order_id}/payment/refund", json=made)
    assert early.status_code == 409, early.text
    assert "void its payment first, `caravan payments void-sold`" in early.json()["detail"]

    code, said = await cli(caravan, order_id, "--reason", "spoiled on arrival", "--dry-run")
    assert code == 0, said
    left = (await admin.get(f"/loans/{loan_id}")).json()["outstanding_fen"]
    assert said.splitlines() == [
        f"would void: order {order_id}: loan {loan_id} (active) of 3000 fen, voided: {left} fen"
        " of credit given back, no instalment due, the 1000 fen the buyer repaid owed back to"
        " them"
    ], said
    assert (await payment(caravan, order_id))["status"] == "authorized", "a dry run voided it"

    voiding = await cli(caravan, order_id, "--reason", "spoiled on arrival")
    await loan_voided(caravan, admin, who, loan_id, voiding)
    seen = await payment(caravan, order_id)
    assert (seen["status"], seen["voided_after_sale_reason"]) == ("voided", "spoiled on arrival")
    assert seen["voided_after_sale_by"] and seen["voided_after_sale_at"], seen
    assert seen["unplaced_at"] is None, seen
    owed = "select count(*) from payments.payables where order_id = :o and status <> 'cancelled'"
    assert await caravan.scalar(owed, o=order_id) == 0
    assert await audited(caravan, order_id, "payment.void_after_sale") == [
        ("spoiled on arrival", "confirmed", "authorized", "voided")
    ]
    shown = await still_confirmed(caravan, order_id)
    assert shown["timeline"][-1]["amount_fen"] == 1000
    # The ledger balances and the checker accepts the confirmed order its payment voided.
    assert await money_checks(caravan, order_id, loan_id) == []

    # Again: answered as it is, nothing voided, said or audited twice.
    code, said = await cli(caravan, order_id, "--reason", "another reason")
    assert code == 0, said
    assert "voided after the sale before" in said, said
    assert "(spoiled on arrival); nothing changed" in said, said
    again = await void(caravan, order_id, "again")
    assert (again["applied"], again["voided_after_sale_reason"]) == (False, "spoiled on arrival")
    voids = "payment.voided"
    assert (
        await caravan.outbox_count("payments", Topic.PAYMENT_EVENTS, voids, order_id=order_id) == 1
    )
    assert len(await audited(caravan, order_id, "payment.void_after_sale")) == 1
    # Asked as of an order orders never had: 409, saying how, when, by whom and why it was
    # voided, nothing changed; so does the command, whose orders API answers 404 (here the
    # payments API, which has no GET /orders/{id}: an orders API of another centre), exit 1.
    async with caravan.api("payments") as api:
        body = {"reason": "forged", "orders_answered": 404}
        other = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert other.status_code == 409, other.text
    how = (
        f"the payment of order {order_id} was voided after the sale, its order confirmed"
        f" (orders_answered confirmed: `void-sold`) at {at(seen['voided_after_sale_at'])} by"
        f" {seen['voided_after_sale_by']} (spoiled on arrival); asked now as of an order the"
        " orders service never had, it is not voided again: nothing changed"
    )
    assert other.json()["detail"] == how, other.json()
    elsewhere = f"http://127.0.0.1:{caravan.port('payments')}"
    code, said = await void_cli(caravan, order_id, "--reason", "forged", "--orders-url", elsewhere)
    assert (code, said.strip()) == (1, f"Payment voided already, the other way: {how}"), said
    code, said = await void_cli(
        caravan, order_id, "--reason", "forged", "--orders-url", elsewhere, "--dry-run"
    )
    assert code == 1 and said.startswith("would not void: order"), said
    assert "voided after the sale before" in said, said
    assert len(await audited(caravan, order_id, "payment.void_after_sale")) == 1
    assert await audited(caravan, order_id) == []  # no payment.void_unplaced
    assert (await payment(caravan, order_id))["unplaced_at"] is None

    # What the buyer repaid, refunded by hand, as a cancelled order's.
    refunded = await caravan_cli(
        caravan,
        "payments",
        "refunded",
        order_id,
        "--reference",
        "BANK-SOLD-0001",
        "--reason",
        "bank transfer",
        "--url",
        f"http://127.0.0.1:{caravan.port('payments')}",
    )
    assert refunded.returncode == 0, refunded.stdout + refunded.stderr
    assert (await payment(caravan, order_id))["status"] == "refunded"
    await published(caravan, "payments", order_id, Topic.PAYMENT_EVENTS)
    await order_handled(caravan, "orders", order_id, Topic.PAYMENT_EVENTS)
    await order_handled(caravan, "notifications", order_id, Topic.PAYMENT_EVENTS)
    await refund_texted(caravan, order_id, req, "CNY 10.00")
    printed = await caravan_cli(caravan, "orders", "show", order_id)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert "confirmed" in lines[0], printed.stdout
    assert any("payment.voided after the sale: 1000 fen owed back" in n for n in lines), lines
    [voided] = [n for n, line in enumerate(lines) if "payment.voided" in line]
    [refund] = [n for n, line in enumerate(lines) if "payment.refunded" in line]
    assert voided < refund, printed.stdout
    assert "payment.refunded: 1000 fen under reference BANK-SOLD-0001" in lines[refund], lines
    assert await money_checks(caravan, order_id, loan_id) == []


async def test_a_confirmed_platform_order_s_collection_is_reversed(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """A platform's order, confirmed on its collection, refunded by the platform after the
    sale: voided, the collection reversed in the ledger, the sellers owed nothing; the order
    stays confirmed."""
    req = order(buyer("after-sale-mall"), {"PAY-BOX": 1}, method="prepaid")
    await _requested_by_adapter(caravan, req)
    order_id = await caravan.placed(req.order_ref, source=MALL)
    await _until_status(caravan, order_id, "awaiting")
    await _paid_on_platform(caravan, req.order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    done = await void(caravan, order_id, "the platform refunded its buyer (TRADE_CLOSED)")
    assert (done["status"], done["applied"]) == ("voided", True), done
    assert await booked(caravan, order_id, "platform_clearing:test-mall") == 0
    owed = "select count(*) from payments.payables where order_id = :o and status <> 'cancelled'"
    assert await caravan.scalar(owed, o=order_id) == 0
    shown = await still_confirmed(caravan, order_id)
    assert shown["timeline"][-1]["amount_fen"] is None  # the platform refunded its buyer
    assert await money_checks(caravan, order_id) == []


async def test_a_confirmed_prepaid_charge_is_voided_or_refused_and_then_refunded_by_hand(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """A confirmed prepaid order: the gateway voids its charge. Another, the gateway refusing
    the void (settled): ``void_refused``, owed back, then refunded by hand (`caravan payments
    refunded`); both orders stay confirmed."""
    voided_req = order(buyer("after-sale-charge"), {"PAY-BOX": 1}, method="prepaid")
    voided_id = (await run(caravan, voided_req)).data["order_id"]
    assert (await void(caravan, voided_id, "spoiled"))["status"] in ("voiding", "voided")
    await _until_status(caravan, voided_id, "voided")
    assert await booked(caravan, voided_id, "gateway_clearing") == 0
    await still_confirmed(caravan, voided_id)
    assert await money_checks(caravan, voided_id) == []

    who = buyer("after-sale-settled")
    settled = {"mode": "settled", "times": 1000}
    assert (await gateway.put(f"/behaviour/{who}", json=settled)).is_success
    refused_id = (await run(caravan, order(who, {"PAY-BOX": 1}, method="prepaid"))).data["order_id"]
    await void(caravan, refused_id, "spoiled")
    await _until_status(caravan, refused_id, "void_refused")
    assert (await payment(caravan, refused_id))["refund_owed_fen"] == 3500
    shown = await still_confirmed(caravan, refused_id)
    assert shown["timeline"][-1]["amount_fen"] == 3500
    assert await money_checks(caravan, refused_id) == []
    made = {"reference": "BANK-SOLD-0002", "reason": "bank transfer"}
    refunded = await admin.post(f"/orders/{refused_id}/payment/refund", json=made)
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["status"] == "refunded"
    await order_handled(caravan, "orders", refused_id, Topic.PAYMENT_EVENTS)
    steps = await caravan.timeline(refused_id)
    assert steps[-2:] == ["payment.voided", "payment.refunded"], steps
    assert await money_checks(caravan, refused_id) == []


async def test_a_pending_or_cancelled_order_is_refused_and_ops_is_needed(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """A pending order is `caravan orders cancel`'s, a cancelled one's payment voided with
    it, an order orders never had `void-unplaced`'s: void-sold refuses each, voiding nothing;
    the route takes no other word of orders than 404 or confirmed, and needs ops."""
    _, _, order_id = await charge_unanswered(caravan, gateway, "after-sale-pending")
    code, said = await cli(caravan, order_id, "--reason", "mistaken")
    assert code == 1, said
    assert "it is pending: cancel it with `caravan orders cancel`" in said, said
    assert (await payment(caravan, order_id))["status"] == "charging"
    async with caravan.api("payments") as api:
        body = {"reason": "mistaken", "orders_answered": "pending"}
        unsaid = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert unsaid.status_code == 422, unsaid.text
    # A caller's word that orders confirmed it, of a charge still in flight: no confirmed
    # order's payment is, so nothing is voided on that word.
    async with caravan.api("payments") as api:
        body = {"reason": "mistaken", "orders_answered": "confirmed"}
        misread = await api.post(f"/orders/{order_id}/payment/void", json=body)
    assert misread.status_code == 409, misread.text
    assert "is charging, not authorized: a confirmed order's payment is" in misread.text
    assert (await payment(caravan, order_id))["status"] == "charging"
    assert await audited(caravan, order_id, "payment.void_after_sale") == []
    assert (await caravan.client.post(f"/orders/{order_id}/cancel")).status_code == 200
    code, said = await cli(caravan, order_id, "--reason", "mistaken")
    assert code == 1, said
    assert "it is cancelled: its payment was voided with it" in said, said

    code, said = await cli(caravan, "00000000-0000-4000-8000-000000000000", "--reason", "x")
    assert code == 1, said
    assert "`caravan payments void-unplaced` it" in said, said

    confirmed = buyer("after-sale-auth")
    await set_limit(admin, confirmed, 10_000)
    sold = (await run(caravan, order(confirmed, {"PAY-UNIT": 10}))).data["order_id"]
    token = await caravan.issue_token(f"no-ops-{confirmed[-6:]}", "credit:write", "orders:read")
    async with caravan.api("payments", token=token) as api:
        body = {"reason": "refunded", "orders_answered": "confirmed"}
        refused = await api.post(f"/orders/{sold}/payment/void", json=body)
    assert refused.status_code == 403, refused.text
    assert (await payment(caravan, sold))["status"] == "authorized"
    # void-unplaced names the command for a confirmed order.
    code, said = await void_cli(caravan, sold, "--reason", "x")
    assert code == 1, said
    assert "void it with `caravan payments void-sold`" in said, said


async def test_a_charge_the_gateway_lost_is_said_so_and_its_void_refused_then_refunded(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """A confirmed prepaid order voided after the sale, whose void the gateway answers 404, no
    such charge, every time though it approved the charge (it lost it): the payment stayed
    ``voiding`` for ever, made again every 30 s, no refund could be recorded for it (409) and
    void-sold again changed nothing. `caravan payments charge-lost` says so: at the gateway's
    next 404 the void is refused for good, ``void_refused``, owed back, counted, audited; then
    refunded by hand as any. A payment not voiding a charge is refused."""
    who = buyer("after-sale-lost")
    sold = (await run(caravan, order(who, {"PAY-BOX": 1}, method="prepaid"))).data["order_id"]
    code, said = await void_cli(caravan, sold, "--reason", "x", void="charge-lost")
    assert code == 1 and "is authorized: only a charge being voided" in said, said
    lost = {"mode": "unknown", "times": 1000}
    assert (await gateway.put(f"/behaviour/{who}", json=lost)).is_success
    await void(caravan, sold, "spoiled")
    await caravan.until(
        lambda: caravan.scalar(
            "select attempts from payments.payments where order_id = :o", o=sold
        ),
        "two voids answered 404",
        ready=lambda attempts: attempts >= 3,  # the charge and two voids
        timeout=60,
    )
    assert (await payment(caravan, sold))["status"] == "voiding"
    made = {"reference": "BANK-LOST-0001", "reason": "bank transfer"}
    early = await admin.post(f"/orders/{sold}/payment/refund", json=made)
    assert early.status_code == 409, early.text
    counted = await caravan.gauge("payments", "caravan_payments_void_refused_total")

    code, said = await void_cli(
        caravan, sold, "--reason", "gateway support: purged", void="charge-lost"
    )
    assert code == 0, said
    assert "the gateway lost its charge of 3500 fen, said (payment voiding)" in said, said
    await _until_status(caravan, sold, "void_refused")
    seen = await payment(caravan, sold)
    assert seen["refund_owed_fen"] == 3500, seen
    assert seen["gateway_refusal"].startswith(f"/charges/{sold}/void: HTTP 404"), seen
    assert seen["gateway_refusal"].endswith(": gateway support: purged)"), seen
    assert "the gateway lost the charge, said " in seen["gateway_refusal"], seen
    assert await caravan.gauge("payments", "caravan_payments_void_refused_total") == counted + 1
    assert await audited(caravan, sold, "payment.charge_lost") == [
        ("gateway support: purged", None, "voiding", "voiding")
    ]
    assert await booked(caravan, sold, "buyer_refund_payable") == -3500
    refunded = await admin.post(f"/orders/{sold}/payment/refund", json=made)
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["status"] == "refunded"
    assert await money_checks(caravan, sold) == []
    code, said = await void_cli(caravan, sold, "--reason", "x", void="charge-lost")
    assert code == 1 and "is refunded: only a charge being voided" in said, said

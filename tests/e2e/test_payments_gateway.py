"""Prepaid payments through the gateway simulator (its own process, over HTTP), and the
settings-driven parts of microloans (interest, instalment reminders), end to end.

The module starts the simulator on a free port and restarts the payments service pointed
at it, with a short client timeout, a monthly interest rate and a wide reminder window;
it restores the defaults afterwards.
"""

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import caravan.system as system
from caravan.checkout import REPO_ROOT
from services.notifications.domain.templates import signed
from shared.events.envelope import CloudEvent, new_event
from shared.events.inventory import ReservedLine, StockReserved
from shared.events.orders import OrderCancelled, OrderRequested, PaymentRequest
from shared.events.platform import PlatformOrderPaid, PlatformOrderRequested
from shared.topics import Topic
from tests.e2e.markers import order_handled, published
from tests.e2e.test_ops import cli as caravan_cli
from tests.e2e.test_payments_credit import (
    buyer,
    confirmation_text,
    credit,
    order,
    payment_answer,
    payments_seed,
    run,
    set_limit,
)
from tests.harness import System, free_port, ref

ENV = {
    "CARAVAN_PAYMENTS_GATEWAY_TIMEOUT_SECONDS": "1",
    "CARAVAN_PAYMENTS_GATEWAY_RETRY_SECONDS": "0.2",
    "CARAVAN_PAYMENTS_GATEWAY_LEASE_SECONDS": "2",
    "CARAVAN_PAYMENTS_MONTHLY_INTEREST_BP": "150",
    "CARAVAN_PAYMENTS_REMINDER_UPCOMING_DAYS": "40",
    "CARAVAN_PAYMENTS_REMINDER_INTERVAL_SECONDS": "0.5",
}


@asynccontextmanager
async def simulator(port: int) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator on ``port``, and its control API once it answers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.payments.simulator",
        "--port",
        str(port),
        cwd=REPO_ROOT,
    )
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        for _ in range(200):
            assert proc.returncode is None, "the simulator exited"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        yield client
    finally:
        await client.aclose()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


@pytest.fixture(scope="module")
async def gateway(caravan: System) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's control API, with payments restarted to use the simulator."""
    await caravan.seed(payments_seed())
    port = free_port()
    async with simulator(port) as client:
        ENV["CARAVAN_PAYMENTS_GATEWAY_URL"] = f"http://127.0.0.1:{port}"
        await caravan.restart(("payments",), **ENV)
        try:
            yield client
        finally:
            await caravan.restart(("payments",))


@pytest.fixture
async def admin(caravan: System, gateway: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    async with caravan.api("payments") as client:
        yield client


async def charges(gateway: httpx.AsyncClient, key: str) -> dict[str, Any]:
    body: dict[str, Any] = (await gateway.get("/charges", params={"key": key})).json()
    return body


async def test_a_gateway_timeout_is_retried_with_the_same_key_and_charges_once(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    who = buyer("gw-slow")
    # The first request is charged, but answered after the client gave up (1 s).
    rule = {"mode": "timeout", "times": 1, "delay_seconds": 3}
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).status_code == 200
    log = caravan.procs.log_dir / "payments.log"
    logged_before = log.stat().st_size
    done = await run(caravan, order(who, {"PAY-BOX": 2}, method="prepaid"))
    assert done.type == "order.confirmed" and done.data["total_fen"] == 7_000
    order_id = done.data["order_id"]
    # The gateway away is one warning naming the order, ended in one line once it answers.
    written = log.read_bytes()[logged_before:].splitlines()
    said = [json.loads(line)["message"] for line in written if line.startswith(b"{")]
    retried = [i for i, line in enumerate(said) if f"for order {order_id}; retrying" in line]
    again = [i for i, line in enumerate(said) if line.startswith("the payment gateway answers")]
    assert retried and again and retried[0] < again[0], said
    seen = await charges(gateway, order_id)
    assert len(seen["charges"]) == 1 and seen["charges"][0]["amount_fen"] == 7_000
    assert seen["requests"][order_id] >= 2  # the timeout was retried
    assert (
        await caravan.scalar(
            "select attempts from payments.payments where order_id = :o", o=order_id
        )
        >= 2
    )
    # The error it met is kept once the gateway answered, and shown to operators: which
    # orders an outage held up, beyond the one its first warning named.
    async with caravan.api("payments") as admin:
        shown = (await admin.get(f"/orders/{order_id}/payment")).json()
    assert (shown["status"], shown["last_error"]) == ("authorized", "/charges: ReadTimeout")
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"
    listed = await caravan_cli(
        caravan, "payments", "list", "--status", "authorized", "--limit", "1", "--url", url
    )
    assert listed.returncode == 0, listed.stderr
    assert order_id in listed.stdout and "/charges: ReadTimeout" in listed.stdout, listed.stdout
    ledger = await caravan.sql(
        "select account, amount_fen from payments.ledger_entries where order_id = :o"
        " order by account",
        o=order_id,
    )
    assert [tuple(r) for r in ledger] == [
        ("gateway_clearing", 7_000),
        ("seller_payable:pay-seller-1", -7_000),
    ]
    assert (
        await caravan.scalar("select status from payments.payables where order_id = :o", o=order_id)
        == "owed"
    )


async def test_a_charge_interrupted_by_a_crash_is_recovered_without_a_second_charge(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    who = buyer("gw-crash")
    rule = {"mode": "timeout", "times": 2, "delay_seconds": 30}
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).status_code == 200
    req = order(who, {"PAY-BOX": 3}, method="prepaid")
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    await _until_requested(caravan, gateway, order_id)
    # The call is in flight (charged at the gateway, unanswered): the service dies.
    crashed = caravan.procs.procs["payments"]
    crashed.kill()
    await asyncio.to_thread(crashed.wait)
    await caravan.restart(("payments",), **ENV)
    done = await caravan.outcome(order_id, timeout=60)
    assert done.type == "order.confirmed"
    seen = await charges(gateway, order_id)
    assert len(seen["charges"]) == 1 and seen["charges"][0]["amount_fen"] == 10_500
    assert seen["requests"][order_id] >= 2
    assert (
        await caravan.scalar(
            "select count(distinct txn_id) from payments.ledger_entries where order_id = :o",
            o=order_id,
        )
        == 1
    )


async def test_a_declined_charge_cancels_the_order(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    who = buyer("gw-declined")
    rule = {"mode": "decline", "times": 1}
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).status_code == 200
    done = await run(caravan, order(who, {"PAY-BOX": 1}, method="prepaid"))
    assert (done.type, done.data["reason"]) == ("order.cancelled", "payment_failed")
    order_id = done.data["order_id"]
    assert (await charges(gateway, order_id))["charges"] == []
    assert (
        await caravan.scalar(
            "select count(*) from payments.ledger_entries where order_id = :o", o=order_id
        )
        == 0
    )
    assert (
        await caravan.scalar("select status from payments.payables where order_id = :o", o=order_id)
        == "cancelled"
    )


async def _until_lapsed(caravan: System, order_id: str) -> None:
    """Until the order's hold has lapsed by this machine's clock, the one payments reads: the
    ``held_until`` its ``stock.reserved`` says has passed."""
    reserved = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id)
    )
    held_until = datetime.fromisoformat(reserved[0].data["held_until"])
    await caravan.until(
        lambda: datetime.now(UTC) >= held_until, f"the hold of {order_id} to lapse", timeout=10
    )


async def _until_released(caravan: System, order_id: str) -> None:
    await caravan.until(
        lambda: caravan.scalar(
            "select status from inventory.reservations where order_id = :o", o=order_id
        ),
        f"the stock of {order_id} released",
        ready=lambda status: status == "released",
    )


async def _ended_expired_declined(caravan: System, order_id: str) -> None:
    """The order ended ``expired``, once, its stock released; payments said only
    ``payment.declined`` of it (nothing voided), once it had handled the cancellation and
    published what it emitted for it."""
    outcome = await caravan.outcome(order_id)
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "expired")
    await _until_released(caravan, order_id)
    await order_handled(caravan, "payments", order_id, Topic.ORDER_EVENTS)
    await published(caravan, "payments", order_id, Topic.PAYMENT_EVENTS)
    assert await caravan.one_terminal(order_id) == "order.cancelled"
    assert [e.type for e in caravan.log.events(Topic.PAYMENT_EVENTS, order_id=order_id)] == [
        "payment.declined"
    ]


async def test_a_reservation_read_after_its_hold_lapsed_is_neither_charged_nor_lent(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """Payments read a prepaid order's and a microloan order's ``stock.reserved`` only after
    their holds lapsed (as when it was paused past the saga deadline): it charges nothing, lends
    nothing, and declines them ``expired``; each order ends ``expired``, once, holding no stock,
    and its cancellation voids nothing. Made certain, not raced: orders is stopped once the
    orders are placed, so nothing cancels them before payments has read their reservations,
    and the hold time is a second, so their holds have lapsed when payments starts."""
    prepaid, borrower = buyer("gw-lapsed"), buyer("gw-lapsed-loan")
    await set_limit(admin, borrower, 100_000)
    reqs = [order(prepaid, {"PAY-BOX": 1}, method="prepaid"), order(borrower, {"PAY-BOX": 1})]
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        await caravan.restart(("inventory",), CARAVAN_INVENTORY_HOLD_SECONDS="1")
        for req in reqs:
            await caravan.request(req)
        order_ids = [await caravan.placed(req.order_ref) for req in reqs]
        await asyncio.to_thread(caravan.procs.stop, ["orders"])
        for order_id in order_ids:
            await _until_lapsed(caravan, order_id)
        log = caravan.procs.log_dir / "payments.log"
        logged_before = log.stat().st_size if log.exists() else 0
        await caravan.restart(("payments",), **ENV)
        answers = [await payment_answer(caravan, order_id) for order_id in order_ids]
        assert [(a.type, a.data.get("reason")) for a in answers] == [
            ("payment.declined", "expired")
        ] * 2
    finally:  # all three started at once, ready together
        await caravan.relaunch(("inventory",))
        if not caravan.procs.hosts(("payments",)):  # stopped still: the test failed before
            await caravan.relaunch(("payments",), **ENV)
        caravan.procs.start(("orders",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)
    for order_id in order_ids:
        await _ended_expired_declined(caravan, order_id)
        seen = await charges(gateway, order_id)
        assert (seen["charges"], seen["requests"]) == ([], {})
        payment = await caravan.sql(
            "select status, loan_id from payments.payments where order_id = :o", o=order_id
        )
        assert [tuple(row) for row in payment] == [("declined", None)]
        for table in ("loans", "ledger_entries", "payables"):
            query = f"select count(*) from payments.{table} where order_id = :o"
            assert await caravan.scalar(query, o=order_id) == 0, table
    assert (await credit(admin, borrower))["available_fen"] == 100_000
    written = log.read_bytes()[logged_before:].splitlines()
    said = [json.loads(line) for line in written if line.startswith(b"{")]
    for order_id in order_ids:
        told = [line for line in said if f"order {order_id}: its hold lapsed" in line["message"]]
        assert [line["level"] for line in told] == ["info"], told
    for method in ("prepaid", "microloan"):
        counted = "caravan_payments_lapsed_holds_total"
        assert await caravan.gauge("payments", counted, method=method) == 1


async def test_a_charge_the_gateway_never_saw_is_not_sent_once_its_hold_lapsed(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    """A prepaid order's ``stock.reserved`` is read in time, and its charge is due while the
    gateway is away (its connection refused: it sees none of the calls); the hold lapses
    meanwhile. Once the gateway is back the charge is not sent: the payment is declined
    ``expired``, the order ends ``expired``, nothing is voided. (It was charged once the
    gateway answered, and voided when the order ended: a charge and a void for an order that
    had lapsed.) Orders is stopped once the order is placed, so nothing cancels it before
    payments decides; the gateway comes back on the port payments was calling, so the
    decision is the same process's, whenever it comes."""
    who = buyer("gw-away-lapsed")
    port = free_port()
    away = {**ENV, "CARAVAN_PAYMENTS_GATEWAY_URL": f"http://127.0.0.1:{port}"}
    req = order(who, {"PAY-BOX": 1}, method="prepaid")
    log = caravan.procs.log_dir / "payments.log"
    row = "select status, attempts, unreached from payments.payments where order_id = :o"
    await caravan.relaunch(("payments",), **away)
    try:
        await caravan.restart(("inventory",), CARAVAN_INVENTORY_HOLD_SECONDS="5")  # both ready
        counted = "caravan_payments_lapsed_holds_total"
        before = await caravan.gauge("payments", counted, method="prepaid")
        logged_before = log.stat().st_size
        await caravan.request(req)
        order_id = await caravan.placed(req.order_ref)
        await asyncio.to_thread(caravan.procs.stop, ["orders"])
        # Read before its hold lapsed (charging, not declined), its charge tried, unreached.
        await caravan.until(
            lambda: caravan.sql(row, o=order_id),
            f"the charge of {order_id} tried while the gateway is away",
            ready=lambda found: found and found[0].status == "charging" and found[0].unreached,
        )
        await _until_lapsed(caravan, order_id)
        async with simulator(port) as back:
            answer = await payment_answer(caravan, order_id)
            assert (answer.type, answer.data.get("reason")) == ("payment.declined", "expired")
            seen = await charges(back, order_id)
            assert (seen["charges"], seen["requests"], seen["void_requests"]) == ([], {}, {})
            assert await caravan.gauge("payments", counted, method="prepaid") == before + 1
    finally:  # all three started at once, ready together
        await caravan.relaunch(("inventory",))
        await caravan.relaunch(("payments",), **ENV)
        caravan.procs.start(("orders",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)
    await _ended_expired_declined(caravan, order_id)
    # Every call it claimed was unreached, and its last was not made.
    [(status, attempts, unreached)] = await caravan.sql(row, o=order_id)
    assert (status, unreached) == ("declined", attempts)
    # An operator reads both, and the hold's time, where the buyer's call is answered.
    async with caravan.api("payments") as admin:
        shown = (await admin.get(f"/orders/{order_id}/payment")).json()
    held = "select held_until from payments.payments where order_id = :o"
    assert (shown["attempts"], shown["unreached"]) == (attempts, attempts)
    assert datetime.fromisoformat(shown["held_until"]) == await caravan.scalar(held, o=order_id)
    assert await caravan.scalar(
        "select array_agg(distinct status) from payments.payables where order_id = :o", o=order_id
    ) == ["cancelled"]
    query = "select count(*) from payments.ledger_entries where order_id = :o"
    assert await caravan.scalar(query, o=order_id) == 0
    written = log.read_bytes()[logged_before:].splitlines()
    said = [json.loads(line) for line in written if line.startswith(b"{")]
    told = [line for line in said if f"order {order_id}: its hold lapsed" in line["message"]]
    assert [line["level"] for line in told] == ["info"], told


async def test_a_charge_id_longer_than_ours_is_kept_and_the_order_confirmed_at_once(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    # A gateway's charge ids are its own: one of 99 characters is stored whole, on the
    # first answer (gateway_ref was 64 characters: the update failed, the charge was asked
    # again after every lease until the order expired and was voided).
    who = buyer("gw-long-id")
    assert (await gateway.put(f"/behaviour/{who}", json={"mode": "long_id"})).is_success
    done = await run(caravan, order(who, {"PAY-BOX": 1}, method="prepaid"))
    assert done.type == "order.confirmed"
    order_id = done.data["order_id"]
    seen = await charges(gateway, order_id)
    [charge] = seen["charges"]
    assert len(charge["charge_id"]) == 99 and seen["requests"][order_id] == 1
    stored = await caravan.scalar(
        "select gateway_ref from payments.payments where order_id = :o", o=order_id
    )
    assert stored == charge["charge_id"]


async def test_a_charge_the_gateway_refuses_cancels_the_order_and_a_garbled_answer_is_asked_again(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    # A 400 is the gateway's refusal: nothing was charged, the order fails at once.
    refused = buyer("gw-refused")
    assert (await gateway.put(f"/behaviour/{refused}", json={"mode": "refuse"})).is_success
    # A page that is not JSON (the charge was made): the outcome is unknown, so asked again.
    garbled = buyer("gw-garbled")
    assert (await gateway.put(f"/behaviour/{garbled}", json={"mode": "garble"})).is_success
    log = caravan.procs.log_dir / "payments.log"
    logged_before = log.stat().st_size
    done = await asyncio.gather(
        run(caravan, order(refused, {"PAY-BOX": 1}, method="prepaid")),
        run(caravan, order(garbled, {"PAY-BOX": 2}, method="prepaid")),
    )
    assert (done[0].type, done[0].data.get("reason")) == ("order.cancelled", "payment_failed")
    refused_id = done[0].data["order_id"]
    seen = await charges(gateway, refused_id)
    assert seen["charges"] == [] and seen["requests"][refused_id] == 1
    assert done[1].type == "order.confirmed"
    garbled_id = done[1].data["order_id"]
    seen = await charges(gateway, garbled_id)
    assert len(seen["charges"]) == 1 and seen["requests"][garbled_id] == 2
    # Neither is a failure of the service: warnings, and no error-level line.
    written = log.read_bytes()[logged_before:].splitlines()
    logged = [json.loads(line) for line in written if line.startswith(b"{")]
    ours = [line for line in logged if garbled_id in line["message"]]
    assert ours and {line["level"] for line in ours} == {"warning"}
    assert "not a JSON object" in ours[0]["message"]
    errors = [line["message"] for line in logged if line["level"] == "error"]
    assert not [message for message in errors if refused_id in message]


async def test_a_cancellation_while_charging_voids_the_charge_at_the_gateway(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    # Inventory's and orders' events are published as they would be, so that the order is
    # cancelled while the gateway is not answering.
    who = buyer("gw-hang")
    rule = {"mode": "timeout", "times": 1000, "delay_seconds": 30}  # never answers in time
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).status_code == 200
    order_id = str(uuid.uuid4())
    reserved = _reserved(order_id, who)
    await _publish(caravan, new_event(reserved, source="test/payments"), Topic.INVENTORY_EVENTS)
    await _until_requested(caravan, gateway, order_id)
    assert (
        await caravan.scalar("select status from payments.payments where order_id = :o", o=order_id)
        == "charging"
    )
    # /metrics shows the charge stuck in flight (an order waiting on the gateway).
    await caravan.until(
        lambda: caravan.gauge("payments", "caravan_payments", status="charging"),
        "caravan_payments{status=charging} above 0",
        timeout=20,
    )
    cancel = OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="expired")
    await _publish(caravan, new_event(cancel, source="test/payments"), Topic.ORDER_EVENTS)
    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert voided[0].data["amount_fen"] == 0  # never posted as charged here
    seen = await charges(gateway, order_id)
    assert [c["voided"] for c in seen["charges"]] == [True]
    assert (
        await caravan.scalar("select status from payments.payments where order_id = :o", o=order_id)
        == "voided"
    )
    assert not caravan.log.events(
        Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
    )


async def test_an_approval_that_comes_after_the_cancellation_is_ignored_and_the_charge_voided(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    """The gateway approves the charge 3 s after it was asked (in the client's time), and the
    order is cancelled meanwhile: the payment, ``voiding`` then, is voided after it. The late
    approval is not recorded: no ``payment.authorized`` for a cancelled order, no charge in
    the ledger, the charge voided at the gateway."""
    slower = {
        "CARAVAN_PAYMENTS_GATEWAY_TIMEOUT_SECONDS": "5",
        "CARAVAN_PAYMENTS_GATEWAY_LEASE_SECONDS": "7",
    }
    await caravan.restart(("payments",), **{**ENV, **slower})
    try:
        who = buyer("gw-late")
        rule = {"mode": "timeout", "times": 1, "delay_seconds": 3}  # answered inside 5 s
        assert (await gateway.put(f"/behaviour/{who}", json=rule)).status_code == 200
        order_id = str(uuid.uuid4())
        reserved = _reserved(order_id, who)
        await _publish(caravan, new_event(reserved, source="test/payments"), Topic.INVENTORY_EVENTS)
        log = caravan.procs.log_dir / "payments.log"
        logged_before = log.stat().st_size
        await _until_requested(caravan, gateway, order_id)
        cancel = OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="expired")
        await _publish(caravan, new_event(cancel, source="test/payments"), Topic.ORDER_EVENTS)
        await _until_status(caravan, order_id, "voiding")  # while the charge is in flight

        def authorized() -> list[CloudEvent]:
            return caravan.log.events(
                Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
            )

        ignored = f"order {order_id} is no longer charging; gateway answer"
        # The gateway's answer handled: ignored (logged), or recorded (authorised).
        await caravan.until(
            lambda: authorized() or ignored.encode() in log.read_bytes()[logged_before:],
            "the gateway's late approval handled",
        )
        assert authorized() == []
        await _until_status(caravan, order_id, "voided")  # then the void
        voided = await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id
            )
        )
        assert [v.data["amount_fen"] for v in voided] == [0]  # never posted as charged
        ledger = "select count(*) from payments.ledger_entries where order_id = :o"
        assert await caravan.scalar(ledger, o=order_id) == 0
        assert [c["voided"] for c in (await charges(gateway, order_id))["charges"]] == [True]
    finally:
        await caravan.restart(("payments",), **ENV)


async def test_a_void_the_gateway_refuses_for_good_is_owed_back_to_the_buyer_not_asked_again(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    """A charge made (the payment authorised), the order then cancelled, and the gateway
    refuses the void for good (422: the charge settled). The void is not asked again: the
    payment is ``void_refused``, what the buyer paid owed back to them (in the ledger and on
    ``GET /orders/{id}/payment``, with the gateway's answer), the sellers owed nothing, and
    it is counted for the alert, and said (``payment.voided``, ``refund_owed_fen``: the order's
    timeline ended on its ``payment.authorized``). (It was asked again every 30 s for ever,
    nothing recorded.)"""
    counted = await caravan.gauge("payments", "caravan_payments_void_refused_total")
    log = caravan.procs.log_dir / "payments.log"
    logged_before = log.stat().st_size
    order_id = await _void_refused(caravan, gateway, "gw-settled")
    # An operator's task with a runbook, not a bug: a warning (it was an error line).
    written = log.read_bytes()[logged_before:].splitlines()
    lines = [json.loads(line) for line in written if line.startswith(b"{")]
    said = [(line["level"], line["message"]) for line in lines if order_id in line["message"]]
    assert (
        "warning",
        f"gateway refused for good to void the charge of voided order {order_id} (HTTP 422:"
        f' {{"title":"void refused","detail":"the charge of {order_id} is settled"}}): 3500 fen'
        " owed back to the buyer, to refund by hand",
    ) in said, said
    # Five retries' room (0.2 s), were it retried. A sleep: a retry is a timer's doing, and
    # nothing the test can wait for would come after it.
    await asyncio.sleep(1.0)
    seen = await charges(gateway, order_id)
    assert seen["void_requests"] == {order_id: 1}
    assert [c["voided"] for c in seen["charges"]] == [False]
    async with caravan.api("payments") as payments:
        payment = (await payments.get(f"/orders/{order_id}/payment")).json()
    assert (payment["status"], payment["refund_owed_fen"]) == ("void_refused", 3500)
    assert payment["gateway_refusal"] == (
        f'HTTP 422: {{"title":"void refused","detail":"the charge of {order_id} is settled"}}'
    )
    balances = await caravan.sql(
        "select account, sum(amount_fen) from payments.ledger_entries where order_id = :o"
        " group by account having sum(amount_fen) <> 0 order by account",
        o=order_id,
    )
    assert [tuple(r) for r in balances] == [
        ("buyer_refund_payable", -3500),
        ("gateway_clearing", 3500),
    ]
    owed = "select count(*) from payments.payables where order_id = :o and status <> 'cancelled'"
    assert await caravan.scalar(owed, o=order_id) == 0
    assert await caravan.gauge("payments", "caravan_payments_void_refused_total") == counted + 1
    # Said as a loan voided with repayments is: the order's timeline ends on it.
    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert [(v.data["amount_fen"], v.data["refund_owed_fen"]) for v in voided] == [(3500, 3500)]


async def test_a_void_the_gateway_answers_no_such_charge_after_approving_it_is_made_again(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    """A charge made (the payment authorised), the order then cancelled, and the gateway
    answers its void 404, no such charge, twice (as after a base URL changed since the
    charge): the gateway took that charge, so the void is made again, not taken for done (the
    charge would stand, the order cancelled) nor refused for good; once the gateway knows the
    charge, it is voided and reversed. The 404 met is kept for operators. (A void of a charge
    never approved is voided at a 404: tests/e2e/test_payments_claims.py.)"""
    who = buyer("gw-unknown")
    rule = {"mode": "unknown", "times": 2}
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).is_success
    order_id = await _charged(caravan, who)
    cancel = OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="expired")
    await _publish(caravan, new_event(cancel, source="test/payments"), Topic.ORDER_EVENTS)
    await _until_status(caravan, order_id, "voided")
    seen = await charges(gateway, order_id)
    assert seen["void_requests"] == {order_id: 3}
    assert [c["voided"] for c in seen["charges"]] == [True]
    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert [v.data["amount_fen"] for v in voided] == [3500]  # the charge reversed
    async with caravan.api("payments") as payments:
        payment = (await payments.get(f"/orders/{order_id}/payment")).json()
    assert (payment["status"], payment["attempts"]) == ("voided", 4)  # a charge, three voids
    assert payment["last_error"] == (
        f'/charges/{order_id}/void: HTTP 404: {{"title":"no such charge",'
        f'"detail":"no charge under {order_id}"}}'
    )


async def test_a_refund_made_by_hand_is_recorded_once_and_the_buyer_owed_nothing_more(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """Operations refunded by hand the buyer of a ``void_refused`` payment and record it (the
    route, then the command): the payment is ``refunded`` with the transfer's reference and
    time, the ledger owes the buyer nothing and holds nothing of the order, the audit trail
    says who and why, the same reference and reason again change nothing, any other status
    is 409, and the gauge the alert watches counts it no longer. (There was no way to record
    it: the payment stayed ``void_refused``, owed, for ever.) The same reference with another
    reason is a 409 naming the reason recorded: it was answered as the refund recorded, the
    reason given dropped unsaid."""
    order_id = await _void_refused(caravan, gateway, "gw-refund")
    route = f"/orders/{order_id}/payment/refund"
    made = {"reference": "BANK-20261205-0001", "reason": "refunded by bank transfer"}
    narrow = await caravan.issue_token(f"credit-only-{uuid.uuid4().hex[:6]}", "credit:write")
    async with caravan.api("payments", token=narrow) as credit_only:
        assert (await credit_only.post(route, json=made)).status_code == 403
    first = await admin.post(route, json=made)
    assert first.status_code == 200, first.text
    done = first.json()
    assert (done["status"], done["refund_owed_fen"], done["refund_reference"]) == (
        "refunded",
        3500,
        "BANK-20261205-0001",
    )
    assert done["refunded_at"] and done["applied"] is True
    again = await admin.post(route, json=made)  # the answer lost: nothing changed, it says
    assert (again.status_code, again.json()) == (200, {**done, "applied": False})
    otherwise = await admin.post(route, json={**made, "reason": "refunded at the gateway"})
    assert otherwise.status_code == 409, otherwise.text
    assert otherwise.json()["detail"] == (
        f"the payment of order {order_id} was refunded under reference 'BANK-20261205-0001'"
        " for another reason: 'refunded by bank transfer'"
    )
    shown = {k: v for k, v in done.items() if k != "applied"}
    assert (await admin.get(f"/orders/{order_id}/payment")).json() == shown
    other = await admin.post(route, json={**made, "reference": "BANK-20261205-0002"})
    assert other.status_code == 409
    assert other.json()["detail"] == (
        f"the payment of order {order_id} is refunded under reference 'BANK-20261205-0001':"
        " only a void_refused one, or a voided loan's repayments owed back, is refunded by hand"
    )
    unknown = await admin.post(f"/orders/{uuid.uuid4()}/payment/refund", json=made)
    assert unknown.status_code == 404
    left = await caravan.sql(
        "select account, sum(amount_fen) from payments.ledger_entries where order_id = :o"
        " group by account having sum(amount_fen) <> 0",
        o=order_id,
    )
    assert list(left) == []
    refund = await caravan.sql(
        "select account, amount_fen from payments.ledger_entries"
        " where txn_id = :t and kind = 'prepaid_refunded' order by account",
        t=f"refund:{order_id}",
    )
    assert [tuple(r) for r in refund] == [
        ("buyer_refund_payable", 3500),
        ("gateway_clearing", -3500),
    ]
    audited = await caravan.sql(
        "select before->>'status', after->>'status', after->>'refund_reference', detail"
        " from auth.audit where action = 'payment.refund' and target = :o",
        o=order_id,
    )
    assert [tuple(r) for r in audited] == [
        ("void_refused", "refunded", "BANK-20261205-0001", made),
    ]

    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"

    async def cli(*args: str) -> tuple[int, str]:
        """``caravan payments refunded ARGS``: its exit code, and what it said."""
        done = await caravan_cli(caravan, "payments", "refunded", "--url", url, *args)
        return done.returncode, done.stdout + done.stderr

    by_cli = await _void_refused(caravan, gateway, "gw-refund-cli")
    owed = await _owed_gauged(caravan, "the payment owed counted")
    said = f"order {by_cli}: 3500 fen refunded to the buyer under reference BANK-0003 (recorded "
    code, out = await cli(by_cli, "--reference", "BANK-0003", "--reason", "bank transfer")
    assert code == 0 and out.startswith(said), out
    # Again (an answer lost): nothing changed, and it says so, and when and by whom (it
    # printed what the first printed, as if it had recorded it then).
    code, out = await cli(by_cli, "--reference", "BANK-0003", "--reason", "bank transfer")
    before = f"{said.removesuffix(' (recorded ')}: recorded before, at "
    assert code == 0 and out.startswith(before), out
    assert " by test-session-" in out and out.endswith("; nothing changed\n"), out
    assert await cli(by_cli, "--reference", "BANK-0003", "--reason", "again") == (
        1,
        f"Refund not recorded: the payment of order {by_cli} was refunded under reference"
        " 'BANK-0003' for another reason: 'bank transfer'\n",
    )
    paid = await _charged(caravan, buyer("gw-refund-paid"))
    code, out = await cli(paid, "--reference", "BANK-0004", "--reason", "by mistake")
    assert code == 1
    assert out == (
        f"Refund not recorded: the payment of order {paid} is authorized: only a void_refused"
        " one, or a voided loan's repayments owed back, is refunded by hand (a confirmed"
        " order's buyer refunded after the sale: void its payment first, `caravan payments"
        " void-sold`)\n"
    )
    # The gauge the alert watches counts it no longer, from the next sample on (5 s).
    assert await _owed_gauged(caravan, "the payment refunded no longer counted") == owed - 1


async def test_a_refund_made_by_hand_is_said_once_on_the_order_s_timeline(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    """An order placed and cancelled by its buyer while its charge was in flight, whose void
    the gateway refuses (settled), is refunded by hand and recorded, twice (an answer lost):
    payments says it once (``payment.refunded``: the amount, the reference, the reason and
    who recorded it), the order's timeline ends on it, the order still cancelled, as
    ``caravan orders show`` prints it, and the buyer is texted that it was paid; its copy read
    again is neither recorded nor texted twice; the void before it says what was owed back.
    (Nothing was said: the timeline ended on the void, no one reading it knew the buyer was
    paid, and the buyer was never told.)"""
    who, req, order_id = await charge_unanswered(caravan, gateway, "gw-refund-said")
    # Cancelled while payments is away, and the gateway then settles what it charged: it
    # approves the charge made again, if payments makes it before it reads the cancellation,
    # and refuses the void either way.
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        cancelled = await caravan.client.post(f"/orders/{order_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        settled = {"mode": "settled", "times": 1000}
        assert (await gateway.put(f"/behaviour/{who}", json=settled)).is_success
    finally:
        await caravan.restart(("payments",), **ENV)
    await _until_status(caravan, order_id, "void_refused")
    route = f"/orders/{order_id}/payment/refund"
    made = {"reference": "BANK-20261206-0001", "reason": "bank transfer"}
    name = f"ops-refund-{uuid.uuid4().hex[:6]}"
    async with caravan.api("payments", token=await caravan.issue_token(name, "ops")) as ops:
        first = await ops.post(route, json=made)
        assert first.status_code == 200, first.text
        again = await ops.post(route, json=made)  # the answer lost
    assert (again.status_code, again.json()) == (200, {**first.json(), "applied": False})
    await published(caravan, "payments", order_id, Topic.PAYMENT_EVENTS)
    said = caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.refunded", order_id=order_id)
    assert [e.data for e in said] == [
        {
            "order_id": order_id,
            "amount_fen": 3500,
            "reference": "BANK-20261206-0001",
            "reason": "bank transfer",
            "recorded_by": name,
        }
    ]
    await order_handled(caravan, "orders", order_id, Topic.PAYMENT_EVENTS)  # read twice
    await order_handled(caravan, "notifications", order_id, Topic.PAYMENT_EVENTS)
    await refund_texted(caravan, order_id, req, "CNY 35.00")
    steps = await caravan.timeline(order_id)
    assert steps[-2:] == ["payment.voided", "payment.refunded"], steps
    assert steps.count("payment.refunded") == 1, steps
    assert await caravan.one_terminal(order_id) == "order.cancelled"
    shown = (await caravan.client.get(f"/orders/{order_id}")).json()
    assert (shown["status"], shown["reason"]) == ("cancelled", "cancelled_by_buyer")
    # What was refunded, under which transfer (the step said neither).
    assert {k: shown["timeline"][-1][k] for k in ("type", "amount_fen", "reference")} == {
        "type": "payment.refunded",
        "amount_fen": 3500,
        "reference": "BANK-20261206-0001",
    }
    # What the void left owed back (the step said nothing of it).
    assert {k: shown["timeline"][-2][k] for k in ("type", "amount_fen", "reference")} == {
        "type": "payment.voided",
        "amount_fen": 3500,
        "reference": None,
    }
    printed = await caravan_cli(caravan, "orders", "show", order_id)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    [voided] = [n for n, line in enumerate(lines) if "payment.voided" in line]
    [refunded] = [n for n, line in enumerate(lines) if "payment.refunded" in line]
    assert voided < refunded, printed.stdout
    assert "payment.voided: 3500 fen owed back" in lines[voided], printed.stdout
    step = "payment.refunded: 3500 fen under reference BANK-20261206-0001"
    assert step in lines[refunded], printed.stdout


async def charge_unanswered(
    caravan: System, gateway: httpx.AsyncClient, name: str
) -> tuple[str, OrderRequested, str]:
    """A new buyer's prepaid order (one PAY-BOX) whose charge the gateway is asked for and
    never answers in time, so that it stays pending: the buyer, the request, the order id."""
    who = buyer(name)
    hang = {"mode": "timeout", "times": 1000, "delay_seconds": 30}
    assert (await gateway.put(f"/behaviour/{who}", json=hang)).is_success
    req = order(who, {"PAY-BOX": 1}, method="prepaid")
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    await _until_requested(caravan, gateway, order_id)
    return who, req, order_id


async def refund_texted(caravan: System, order_id: str, req: OrderRequested, amount: str) -> None:
    """The buyer of ``req`` (``order_id``) was told, once, in their locale, that their refund
    of ``amount`` was paid."""
    texts = await caravan.sql(
        "select text from notifications.sms where order_id = :o and purpose = 'refund_paid'",
        o=order_id,
    )
    paid = f"Your refund of {amount} for order {req.order_ref} has been paid."
    assert [t.text for t in texts] == [signed("en", req.buyer.phone, paid)]


async def _owed_gauged(caravan: System, what: str) -> float:
    """The gauge the alert ``CaravanPaymentVoidRefused`` watches, once it counts the payments
    ``void_refused`` now (at most two samples of 5 s: it was up to a minute behind)."""
    owed = "select count(*) from payments.payments where status = 'void_refused'"
    counted = float(await caravan.scalar(owed))

    async def gauged() -> float:
        return await caravan.gauge("payments", "caravan_payments", status="void_refused")

    return await caravan.until(gauged, f"{what}: {counted}", 15, 0.5, counted.__eq__)


async def test_operators_list_the_payments_owed_back_and_read_one(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """``GET /payments?status=void_refused`` (scope ops) lists the payments whose buyer is
    owed a refund by hand, the last changed first, paged; recorded refunded, one is listed
    under ``refunded`` instead; an ops token reads ``GET /orders/{id}/payment`` too; and
    ``caravan payments list --status void_refused`` shows them. (Operators had to run SQL in
    psql to find them, and an ops token could not read a payment.)"""
    first = await _void_refused(caravan, gateway, "gw-list-1")
    second = await _void_refused(caravan, gateway, "gw-list-2")
    ops = await caravan.issue_token(f"ops-only-{uuid.uuid4().hex[:6]}", "ops")
    async with caravan.api("payments", token=ops) as operator:

        async def listed(status: str, limit: int = 100) -> list[dict[str, Any]]:
            """Every page of ``GET /payments?status=``, ``limit`` a page."""
            items: list[dict[str, Any]] = []
            params: dict[str, Any] = {"status": status, "limit": limit}
            while True:
                got = await operator.get("/payments", params=params)
                assert got.status_code == 200, got.text
                assert len(got.json()["items"]) <= limit
                items += got.json()["items"]
                if got.json()["next_cursor"] is None:
                    return items
                params["cursor"] = got.json()["next_cursor"]

        owed = await listed("void_refused")
        assert [p["order_id"] for p in owed][:2] == [second, first]
        assert await listed("void_refused", limit=1) == owed  # paged one by one, the same
        times = [p["updated_at"] for p in owed]
        assert times == sorted(times, reverse=True)
        shown = (await operator.get(f"/orders/{first}/payment")).json()
        assert owed[1]["buyer_id"].startswith("pay-gw-list-1-")
        assert owed[1] == {**shown, "buyer_id": owed[1]["buyer_id"], "updated_at": times[1]}
        assert (shown["status"], shown["refund_owed_fen"]) == ("void_refused", 3500)
        # The command with --limit 1, while both are owed: the newest, and more to see.
        url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"
        done = await caravan_cli(
            caravan, "payments", "list", "--status", "void_refused", "--limit", "1", "--url", url
        )
        assert done.returncode == 0, done.stderr
        said = "the last changed 1 void_refused payment(s): more with a higher --limit"
        assert said in done.stdout, done.stdout
        assert second in done.stdout and "pay-gw-list-2-" in done.stdout
        assert first not in done.stdout
        assert "void refused: HTTP 422" in done.stdout, done.stdout  # the gateway's refusal

        made = {"reference": "BANK-LIST-1", "reason": "refunded by bank transfer"}
        assert (await operator.post(f"/orders/{first}/payment/refund", json=made)).is_success
        assert first not in [p["order_id"] for p in await listed("void_refused")]
        assert first in [p["order_id"] for p in await listed("refunded")]

        bad = await operator.get("/payments", params={"status": "owed"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert (await operator.get("/payments")).status_code == 422
    narrow = await caravan.issue_token(f"orders-only-{uuid.uuid4().hex[:6]}", "orders:read")
    async with caravan.api("payments", token=narrow) as orders_only:
        assert (await orders_only.get("/payments?status=void_refused")).status_code == 403


async def _charged(caravan: System, who: str) -> str:
    """An order of ``who`` whose prepaid charge the gateway approved (authorised): its id."""
    order_id = str(uuid.uuid4())
    reserved = _reserved(order_id, who)
    await _publish(caravan, new_event(reserved, source="test/payments"), Topic.INVENTORY_EVENTS)
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
        )
    )
    return order_id


async def test_two_refunds_recorded_at_once_are_one_refund_and_one_refusal(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """Two operators record one payment's refund at the same moment under two references:
    one is recorded, the other answered 409 (never a 500, never the second reference written
    over the first), one ledger posting, one audit row, one ``payment.refunded``. The race is
    made certain: the test holds the payment's row lock while both requests come to wait for
    it, then lets them go."""
    order_id = await _void_refused(caravan, gateway, "gw-refund-race")
    route = f"/orders/{order_id}/payment/refund"
    async with caravan.row_locked("payments.payments", "order_id", order_id) as holder:
        racing = [
            asyncio.create_task(admin.post(route, json={"reference": r, "reason": "race"}))
            for r in ("BANK-RACE-A", "BANK-RACE-B")
        ]
        await caravan.lock_waiters(holder, "both refunds to wait for the payment's lock", 2)
    answers = [await task for task in racing]
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    [won] = [a.json() for a in answers if a.status_code == 200]
    [lost] = [a.json() for a in answers if a.status_code == 409]
    # The loser read the payment once the winner committed (the row's lock): the operator is
    # told which reference refunded it, not that a race was lost at commit (its ledger
    # posting's key, with nothing to say about the refund made).
    assert f"refunded under reference {won['refund_reference']!r}" in lost["detail"], lost
    assert won.pop("applied") is True
    assert (await admin.get(f"/orders/{order_id}/payment")).json() == won
    postings = await caravan.sql(
        "select count(*) from payments.ledger_entries where txn_id = :t", t=f"refund:{order_id}"
    )
    audited = await caravan.sql(
        "select count(*) from auth.audit where action = 'payment.refund' and target = :o",
        o=order_id,
    )
    assert (postings[0][0], audited[0][0]) == (2, 1)
    said = await caravan.outbox_count(
        "payments", Topic.PAYMENT_EVENTS, "payment.refunded", order_id=order_id
    )
    assert said == 1  # said once, by the refund recorded


async def _void_refused(caravan: System, gateway: httpx.AsyncClient, tag: str) -> str:
    """An order charged, then cancelled, whose void the gateway refuses for good (its charge
    settled): its payment ``void_refused``. Its id."""
    who = buyer(tag)
    rule = {"mode": "settled", "times": 1000}  # a settled charge is never voided
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).is_success
    order_id = await _charged(caravan, who)
    cancel = OrderCancelled(order_id=order_id, order_ref=ref("PAY"), reason="expired")
    await _publish(caravan, new_event(cancel, source="test/payments"), Topic.ORDER_EVENTS)
    await _until_status(caravan, order_id, "void_refused")
    return order_id


async def test_an_order_a_platform_collected_is_not_charged_again(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    # A marketplace platform took the buyer's money before its adapter placed the order: the
    # gateway, which would decline this buyer, is never asked; the sellers are owed what the
    # platform holds for us. Only once the adapter says so (platform.order_paid): here after
    # the stock was reserved.
    who = buyer("gw-platform")
    rule = {"mode": "decline", "times": 1000}
    assert (await gateway.put(f"/behaviour/{who}", json=rule)).status_code == 200
    req = order(who, {"PAY-BOX": 2}, method="prepaid")
    await _requested_by_adapter(caravan, req)
    order_id = await caravan.placed(req.order_ref, source=MALL)
    await _until_status(caravan, order_id, "awaiting")
    assert caravan.terminal(order_id) == []
    await _paid_on_platform(caravan, req.order_ref)
    done = await caravan.outcome(order_id)
    assert (done.type, done.data.get("reason")) == ("order.confirmed", None)
    assert order_id not in (await charges(gateway, order_id))["requests"]
    assert [
        tuple(r)
        for r in await caravan.sql(
            "select account, amount_fen from payments.ledger_entries where order_id = :o"
            " order by account",
            o=order_id,
        )
    ] == [("platform_clearing:test-mall", 7_000), ("seller_payable:pay-seller-1", -7_000)]
    async with caravan.api("payments") as payments:
        seen = (await payments.get(f"/orders/{order_id}/payment")).json()
    assert (seen["status"], seen["collected_by"], seen["attempts"]) == (
        "authorized",
        "test-mall",
        0,
    )

    # Paid before the stock was reserved, then cancelled before it was confirmed (the saga
    # ran out of time): the platform refunds its buyer; we reverse what we recorded and tell
    # no gateway.
    cancelled, cancelled_ref = str(uuid.uuid4()), ref("PAY")
    await _paid_on_platform(caravan, cancelled_ref)
    reserved = _reserved(cancelled, who, source=MALL, order_ref=cancelled_ref)
    await _publish(caravan, new_event(reserved, source="test/payments"), Topic.INVENTORY_EVENTS)
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=cancelled
        )
    )
    cancel = OrderCancelled(order_id=cancelled, order_ref=cancelled_ref, reason="expired")
    await _publish(caravan, new_event(cancel, source="test/payments"), Topic.ORDER_EVENTS)
    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=cancelled)
    )
    assert voided[0].data["amount_fen"] == 3500
    await _until_status(caravan, cancelled, "voided")
    assert (
        await caravan.scalar(
            "select sum(amount_fen) from payments.ledger_entries where order_id = :o"
            " and account = 'platform_clearing:test-mall'",
            o=cancelled,
        )
        == 0
    )
    assert cancelled not in (await charges(gateway, cancelled))["requests"]


async def test_a_platform_order_is_never_paid_for_without_the_adapters_word(
    caravan: System, gateway: httpx.AsyncClient
) -> None:
    # Whoever may publish orders can write a platform's source: there, it is refused. And
    # a platform's order the adapter placed waits unpaid until the adapter says the platform
    # was paid; its cancellation (here the buyer's; else its deadline) leaves nothing
    # charged or owed.
    who = buyer("gw-forged")
    forged = order(who, {"PAY-BOX": 1}, method="prepaid")
    await caravan.request(forged, source=MALL)
    rejected = await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.ORDER_EVENTS, type="order.rejected", order_ref=forged.order_ref
        )
    )
    assert [e["field"] for e in rejected[0].data["errors"]] == ["source"]
    assert (
        caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=forged.order_ref)
        == []
    )

    req = order(who, {"PAY-BOX": 1}, method="prepaid")
    await _requested_by_adapter(caravan, req)
    order_id = await caravan.placed(req.order_ref, source=MALL)
    await _until_status(caravan, order_id, "awaiting")
    # An authorisation would have been emitted with that status, or before it.
    await published(caravan, "payments", order_id, Topic.PAYMENT_EVENTS)
    authorized = caravan.log.events(
        Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
    )
    assert authorized == []
    assert (await caravan.client.post(f"/orders/{order_id}/cancel")).status_code == 200
    voided = await caravan.wait_for(
        lambda: caravan.log.events(Topic.PAYMENT_EVENTS, type="payment.voided", order_id=order_id)
    )
    assert voided[0].data["amount_fen"] == 0
    await _until_status(caravan, order_id, "voided")
    assert not caravan.log.events(
        Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
    )
    owed = "select count(*) from payments.payables where order_id = :o and status = 'owed'"
    assert await caravan.scalar(owed, o=order_id) == 0
    assert order_id not in (await charges(gateway, order_id))["requests"]


MALL = "platform/test-mall"


async def _requested_by_adapter(caravan: System, req: OrderRequested) -> None:
    """``platform.order_requested``, as the platform adapter publishes a platform's order."""
    event = new_event(PlatformOrderRequested(**dict(req)), source=MALL)
    await caravan.publish_raw(Topic.PLATFORM_EVENTS.value, event.to_json(), req.order_ref.encode())


async def _paid_on_platform(caravan: System, order_ref: str) -> None:
    """``platform.order_paid``, as the platform adapter publishes it with its order."""
    paid = PlatformOrderPaid(order_ref=order_ref, source=MALL)
    event = new_event(paid, source=MALL)
    await caravan.publish_raw(Topic.PLATFORM_EVENTS.value, event.to_json(), order_ref.encode())


async def _until_status(caravan: System, order_id: str, status: str) -> None:
    await caravan.until(
        lambda: caravan.scalar(
            "select status from payments.payments where order_id = :o", o=order_id
        ),
        f"the payment of {order_id} {status}",
        ready=lambda found: found == status,
    )


def _reserved(
    order_id: str, who: str, source: str | None = None, order_ref: str | None = None
) -> StockReserved:
    """``stock.reserved`` of one PAY-BOX (3,500 fen), prepaid, as inventory publishes it."""
    line = ReservedLine(
        sku="PAY-BOX", quantity=1, unit_price_fen=3500, seller_id="pay-seller-1", lots=[]
    )
    return StockReserved(
        order_id=order_id,
        buyer_id=who,
        payment=PaymentRequest(method="prepaid"),
        lines=[line],
        total_fen=3500,
        source=source,
        order_ref=order_ref,
    )


async def _until_requested(caravan: System, gateway: httpx.AsyncClient, key: str) -> None:
    await caravan.until(
        lambda: charges(gateway, key),
        f"the gateway to be asked to charge {key}",
        ready=lambda seen: seen["requests"].get(key),
    )


async def _publish(caravan: System, event: CloudEvent, topic: Topic) -> None:
    key = str(event.data["order_id"]).encode()
    await caravan.publish_raw(topic.value, event.to_json(), key=key)


async def test_interest_by_the_configured_rate_and_a_reminder_once_per_stage(
    caravan: System, gateway: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    who = buyer("interest")
    await set_limit(admin, who, 10_000)
    done = await run(caravan, order(who, {"PAY-UNIT": 100}, term=3))  # 150 bp a month
    assert done.type == "order.confirmed"
    order_id, loan_id = done.data["order_id"], done.data["payment"]["loan_id"]
    authorized = caravan.log.events(
        Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
    )[0]
    assert authorized.data["interest_fen"] == 450
    assert [(i["amount_fen"], i["interest_fen"]) for i in authorized.data["schedule"]] == [
        (3484, 150),
        (3483, 150),
        (3483, 150),
    ]
    loan = (await admin.get(f"/loans/{loan_id}")).json()
    assert (loan["outstanding_fen"], loan["remaining_fen"]) == (10_000, 10_450)
    # The buyer is told what they repay in all, and the interest in it (in the confirmation:
    # the first instalment's reminder, below, may be texted before it).
    told = await confirmation_text(caravan, order_id)
    first = authorized.data["schedule"][0]["due"]
    assert (
        "Payment: microloan, CNY 104.50 to repay (CNY 4.50 interest) in 3 monthly instalments,"
        f" the first of CNY 34.84 due on {first}." in told
    )
    assert (await credit(admin, who))["available_fen"] == 0  # only principal uses credit

    # The first instalment is due in about a month: inside the 40-day window.
    due = await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.PAYMENT_EVENTS, type="payment.instalment_due", loan_id=loan_id
        )
    )
    assert [(e.data["number"], e.data["stage"], e.data["amount_fen"]) for e in due] == [
        (1, "upcoming", 3484)
    ]
    # A later loan's reminder means more sweeps ran: still one reminder for the first loan.
    other = buyer("interest")
    await set_limit(admin, other, 10_000)
    later = await run(caravan, order(other, {"PAY-UNIT": 10}, term=1))
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.PAYMENT_EVENTS,
            type="payment.instalment_due",
            loan_id=later.data["payment"]["loan_id"],
        )
    )
    assert (
        await caravan.scalar(
            "select count(*) from payments.instalment_reminders where loan_id = :l", l=loan_id
        )
        == 1
    )
    assert (
        await caravan.outbox_count(
            "payments", Topic.PAYMENT_EVENTS, "payment.instalment_due", loan_id=loan_id
        )
        == 1
    )

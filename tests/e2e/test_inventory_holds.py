"""Holds that are never paid for: with payments stopped, a hold expires (``stock.expired``,
the order ends ``expired``, the stock comes back) and is reported once however long it stays
held (by two instances sweeping at once too), and stock released into a lot that expired
meanwhile is recorded as spoiled."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import insert, select
from typer.testing import CliRunner

import caravan.system as system
from caravan import output
from caravan.inventory_cli import app as inventory_cli
from services.inventory.adapters.repository import StockRepository
from services.inventory.adapters.tables import outbox, reservations
from services.inventory.handlers import report_overdue_holds
from shared import days
from shared.events.envelope import CloudEvent
from shared.events.orders import OrderRequested
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed
from tests.e2e.markers import published
from tests.e2e.test_ops import cli
from tests.harness import System, backend_pid, ref

BUYER = {"id": "inv-hold-buyer", "phone": "+8613900007011", "locale": "en"}


async def _seed(caravan: System, lots: dict[str, int]) -> str:
    sku = f"INV-HOLD-{uuid.uuid4().hex[:8]}"
    await caravan.seed(
        one_sku_seed(
            sku,
            700,
            {suffix: (quantity, -3, 3 + i) for i, (suffix, quantity) in enumerate(lots.items())},
            [{**BUYER, "credit_limit_fen": 10**9}],
        )
    )
    return sku


async def place(caravan: System, sku: str, quantity: int, buyer: dict[str, str] = BUYER) -> str:
    """Request a prepaid order of ``quantity`` of ``sku``; its id once it is placed."""
    req = OrderRequested.model_validate(
        {
            "order_ref": ref("INV"),
            "buyer": buyer,
            "lines": [{"sku": sku, "quantity": quantity}],
            "payment": {"method": "prepaid"},
        }
    )
    await caravan.request(req)
    return await caravan.placed(req.order_ref)


async def _hold(caravan: System, sku: str, quantity: int) -> str:
    order_id = await place(caravan, sku, quantity)
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id)
    )
    return order_id


async def _counters(caravan: System, sku: str) -> dict[str, tuple[int, ...]]:
    rows = await caravan.sql(
        "select lot_id, available, reserved, sold, spoiled from inventory.lots where sku = :s",
        s=sku,
    )
    return {r.lot_id.removeprefix(f"{sku}-"): tuple(r[1:]) for r in rows}


async def test_stock_released_into_an_expired_lot_is_spoiled(no_payments: System) -> None:
    caravan = no_payments
    sku = await _seed(caravan, {"A": 4, "B": 10})
    order_id = await _hold(caravan, sku, 6)  # 4 from A, 2 from B
    assert await _counters(caravan, sku) == {"A": (0, 4, 0, 0), "B": (8, 2, 0, 0)}
    # Time passes: lot A is past its best_before by the time the buyer cancels.
    yesterday = days.today() - timedelta(days=1)
    await caravan.execute(
        "update inventory.lots set best_before = :d where lot_id = :l", d=yesterday, l=f"{sku}-A"
    )
    cancelled = await caravan.client.post(f"/orders/{order_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    released = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id)
    )
    assert (released[0].data["returned"], released[0].data["spoiled"]) == (2, 4)
    assert await _counters(caravan, sku) == {"A": (0, 0, 0, 4), "B": (10, 0, 0, 0)}
    port = caravan.procs.env["CARAVAN_INVENTORY_HTTP_PORT"]
    report = (
        await caravan.client.get(f"http://127.0.0.1:{port}/reports/spoiled", params={"sku": sku})
    ).json()
    assert [(x["lot_id"], x["spoiled"], x["expired_unsold"]) for x in report["lots"]] == [
        (f"{sku}-A", 4, 0)
    ]
    # Its history said "no adjustments or corrections", and nothing of its 4 spoiled.
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    url = ["--url", f"http://127.0.0.1:{port}"]
    shown = runner.invoke(inventory_cli, ["lot", f"{sku}-A", *url])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[1:] == [
        "no adjustments or corrections",
        "4 spoiled coming back from orders' holds released after its best-before (orders"
        " cancelled or expired: stock.released), not listed one by one",
    ], shown.output


async def test_an_unpaid_hold_expires_and_its_stock_comes_back(no_payments: System) -> None:
    caravan = no_payments
    sku = await _seed(caravan, {"A": 3, "B": 5})
    await caravan.restart(("inventory",), CARAVAN_INVENTORY_HOLD_SECONDS="2")
    try:
        order_id = await _hold(caravan, sku, 4)
        assert await _counters(caravan, sku) == {"A": (0, 3, 0, 0), "B": (4, 1, 0, 0)}
        await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.INVENTORY_EVENTS, type="stock.expired", order_id=order_id
            ),
            timeout=20,
        )
        outcome = await caravan.outcome(order_id)
        assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "expired")
        released = await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id
            )
        )
        assert (released[0].data["returned"], released[0].data["spoiled"]) == (4, 0)
        assert await _counters(caravan, sku) == {"A": (3, 0, 0, 0), "B": (5, 0, 0, 0)}
        row = (
            await caravan.sql(
                "select status, expiry_notified_at from inventory.reservations where order_id = :o",
                o=order_id,
            )
        )[0]
        assert row.status == "released" and row.expiry_notified_at is not None
    finally:
        await caravan.restart(("inventory",))


async def _overdue(caravan: System, order_id: str) -> None:
    """Make the order's hold older than any hold time (as if it had been placed long ago)."""
    await caravan.execute(
        "update inventory.reservations set created_at = created_at - interval '30 days'"
        " where order_id = :o",
        o=order_id,
    )


def _expired(caravan: System, order_id: str) -> list[CloudEvent]:
    return caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.expired", order_id=order_id)


async def test_an_overdue_hold_is_reported_once_across_sweeps_and_a_restart(
    no_payments: System,
) -> None:
    """With orders stopped too, nothing cancels the order: its hold stays ``reserved``, overdue,
    through the sweeps (each second) and a restart of inventory, and is reported once. The
    reports of other holds made overdue after it, before the restart and after, show that
    sweeps ran by then."""
    caravan = no_payments
    sku = await _seed(caravan, {"A": 10})
    order_id, next_id, later_id = [await _hold(caravan, sku, 1) for _ in range(3)]
    await asyncio.to_thread(caravan.procs.stop, ["orders"])
    try:
        await _overdue(caravan, order_id)
        await caravan.wait_for(lambda: _expired(caravan, order_id))
        # A sweep after the one that reported it: a sweep reports the overdue holds oldest
        # first, in one transaction, so one reporting a hold made overdue after this one
        # would report this one again with it.
        await _overdue(caravan, next_id)
        await caravan.wait_for(lambda: _expired(caravan, next_id))
        await caravan.restart(("inventory",))
        await _overdue(caravan, later_id)
        await caravan.wait_for(lambda: _expired(caravan, later_id))
        status = await caravan.scalar(
            "select status from inventory.reservations where order_id = :o", o=order_id
        )
        assert status == "reserved"
        await published(caravan, "inventory", order_id, Topic.INVENTORY_EVENTS)
        assert len(_expired(caravan, order_id)) == 1
    finally:
        caravan.procs.start(("orders",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)
    # Orders, started again, reads the reports and cancels the orders.
    for held in (order_id, next_id, later_id):
        outcome = await caravan.outcome(held)
        assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "expired")


async def test_a_hold_ended_before_it_was_due_is_not_reported_when_it_is(
    no_payments: System,
) -> None:
    """A hold released (its order cancelled) before the hold time passed is not reported as
    overdue once it has: a ``stock.expired`` of an order that ended has orders publish its
    end again, so every order would be ended twice over. A hold made overdue after it, and
    reported, shows that a sweep ran by then (a sweep reports the oldest first)."""
    caravan = no_payments
    sku = await _seed(caravan, {"A": 10})
    ended, other = [await _hold(caravan, sku, 1) for _ in range(2)]
    # Cancelled through orders, not by an order.cancelled of the test's own: orders would
    # keep the order pending, and confirm it once payments, started again, paid for it.
    cancelled = await caravan.client.post(f"/orders/{ended}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=ended)
    )
    await _overdue(caravan, ended)
    await _overdue(caravan, other)
    await caravan.wait_for(lambda: _expired(caravan, other))
    await published(caravan, "inventory", ended, Topic.INVENTORY_EVENTS)
    assert _expired(caravan, ended) == []


async def test_the_hold_of_an_order_whose_end_inventory_dead_lettered_is_released_when_due(
    no_payments: System,
) -> None:
    """Inventory fails three times on two orders' ``order.cancelled`` (a check on its holds
    that their release breaks, for this test alone) and dead-letters them: their stock stays
    held. When the holds are due (made overdue, as if the hold time had passed), orders reads
    ``stock.expired`` of orders that ended and publishes the first one's ``order.cancelled``
    again, the same event (one id): inventory releases its stock, and orders counts it. The
    second one's end is no longer in orders' outbox (pruned, as after a day): its stock stays
    held, and orders counts it ``missing`` for an operator, who redrives the dead letter (so
    that no replay of the session's topics finds an event inventory never handled).
    (Without: every such hold stayed ``reserved``, its stock held for ever, and nothing said.)"""
    caravan = no_payments
    sku = await _seed(caravan, {"A": 5})
    order_id, pruned_id = await _hold(caravan, sku, 2), await _hold(caravan, sku, 2)
    check = f"test_holds_{uuid.uuid4().hex[:8]}"
    await caravan.execute(
        f"alter table inventory.reservations add constraint {check} check"
        f" (order_id not in ('{order_id}', '{pruned_id}') or status = 'reserved') not valid"
    )
    try:
        for held in (order_id, pruned_id):
            cancelled = await caravan.client.post(f"/orders/{held}/cancel")
            assert cancelled.status_code == 200, cancelled.text
        letters = await caravan.wait_for(
            lambda: [
                letter
                for held in (order_id, pruned_id)
                for letter in caravan.log.letters(Topic.ORDER_EVENTS, held, "inventory")
            ],
            count=2,
        )
    finally:
        await caravan.execute(f"alter table inventory.reservations drop constraint {check}")
    assert {dict(r.headers)["dlq.error"] for r in letters} == {b"handler_error"}
    assert await _counters(caravan, sku) == {"A": (1, 4, 0, 0)}
    # Its order.cancelled set aside, as the relay does with a record Kafka refuses for good
    # (it was counted "unsent", on its way, though it never goes), its order.placed pruned.
    await caravan.execute(
        "update orders.outbox set sent_at = null, refused_at = now(), refusal = 'test'"
        " where key = :k and convert_from(value, 'UTF8') like '%order.cancelled%'",
        k=pruned_id.encode(),
    )
    await caravan.execute(
        "delete from orders.outbox where key = :k and refused_at is null", k=pruned_id.encode()
    )
    before = {
        outcome: await caravan.gauge("orders", HELD_ENDS, outcome=outcome)
        for outcome in ("republished", "missing")
    }
    for held in (order_id, pruned_id):
        await _overdue(caravan, held)
    released = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id)
    )
    assert (released[0].data["returned"], released[0].data["spoiled"]) == (2, 0)
    ends = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.cancelled", order_id=order_id),
        count=2,
    )
    assert len(ends) == 2 and ends[0].id == ends[1].id, ends
    assert await caravan.one_terminal(order_id) == "order.cancelled"
    assert await caravan.gauge("orders", HELD_ENDS, outcome="republished") == (
        before["republished"] + 1
    )
    await caravan.until(
        lambda: caravan.gauge("orders", HELD_ENDS, outcome="missing"),
        "the pruned end counted missing",
        ready=lambda missing: missing == before["missing"] + 1,
    )
    assert await _counters(caravan, sku) == {"A": (3, 2, 0, 0)}
    assert _expired(caravan, pruned_id)
    status = await caravan.scalar(
        "select status from inventory.reservations where order_id = :o", o=pruned_id
    )
    assert status == "reserved"
    [letter] = [r for r in letters if r.key == pruned_id.encode()]
    redriven = await cli(
        caravan, "dlq", "redrive", f"{letter.topic}:{letter.partition}:{letter.offset}"
    )
    assert redriven.returncode == 0, redriven.stderr
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.INVENTORY_EVENTS, type="stock.released", order_id=pruned_id
        )
    )
    assert await _counters(caravan, sku) == {"A": (5, 0, 0, 0)}
    # The row set aside goes, as an operator's would once dealt with: the session's other
    # tests count orders' rows set aside (tests/e2e/test_outbox_relay.py).
    await caravan.execute(
        "delete from orders.outbox where key = :k and refused_at is not null", k=pruned_id.encode()
    )


HELD_ENDS = "caravan_orders_ends_held_total"


async def test_a_hold_one_instance_is_reporting_is_passed_over_by_another_at_once(
    caravan: System,
) -> None:
    """Two inventory instances sweeping at once: the overdue hold the first is reporting (its
    sweep not yet committed) is skipped by the second, not reported by it too once the first
    commits (a second ``stock.expired``: orders would end the order's saga over again). Nor
    does the second wait for the first to commit."""
    order_id = str(uuid.uuid4())
    hold = timedelta(minutes=15)
    async with caravan.alone("inventory") as uow:
        async with uow.begin() as tx:
            # Older than any other hold, so that a sweep of one reports it first.
            old = datetime.now(UTC) - timedelta(days=3650)
            await tx.conn.execute(
                insert(reservations).values(order_id=order_id, status="reserved", created_at=old)
            )

        async def other_sweep() -> int:
            async with uow.begin() as tx:
                return await report_overdue_holds(tx, hold, limit=1)

        async with uow.begin() as tx:
            assert await report_overdue_holds(tx, hold, limit=1) == 1
            holder = await backend_pid(tx.conn)
            second, without_waiting = await caravan.beside(holder, other_sweep())
        await second
        async with uow.db.engine.connect() as conn:
            written = select(outbox.c.value).where(outbox.c.topic == Topic.INVENTORY_EVENTS.value)
            values = (await conn.execute(written)).scalars()
    told = [e["type"] for e in map(orjson.loads, values) if e["data"].get("order_id") == order_id]
    assert told == ["stock.expired"]
    assert without_waiting, "the other sweep waited for the first's lock"


async def test_a_hold_marked_reported_again_keeps_the_time_of_its_first_report(
    caravan: System,
) -> None:
    """Marking a hold reported leaves one already reported as it was: the time its report
    went is kept. (The sweep marks only the holds it has just found unreported and locked, so
    it never marks one twice; a second mark overwrote the time of the report with its own.)"""
    order_id = str(uuid.uuid4())
    first = datetime.now(UTC) - timedelta(days=2)
    async with caravan.alone("inventory") as uow:
        async with uow.begin() as tx:
            await tx.conn.execute(
                insert(reservations).values(
                    order_id=order_id, status="reserved", expiry_notified_at=first
                )
            )
        async with uow.begin() as tx:
            await StockRepository(tx).mark_expiry_notified([order_id])
        async with uow.db.engine.connect() as conn:
            noticed = select(reservations.c.expiry_notified_at).where(
                reservations.c.order_id == order_id
            )
            assert await conn.scalar(noticed) == first


async def test_the_orders_holding_a_lot_are_listed_each_until_its_hold_ends(
    no_payments: System,
) -> None:
    """A cold store's fault spoiled part of a lot while orders held units of it: the write-off
    was refused "N more held by orders", and the clerk queried the database by hand to learn
    which orders, to call their buyers or cancel them. ``GET /lots/{id}/holds`` and
    ``caravan inventory holds LOT`` list them, the oldest first, with their units, since when
    and until when (their stock.reserved's), the total the lot's ``reserved``; an order
    cancelled leaves the list, and a lot held by none says so in a line."""
    caravan = no_payments
    sku = await _seed(caravan, {"A": 4, "B": 10})
    lot = f"{sku}-A"
    first = await _hold(caravan, sku, 3)  # 3 of A
    second = await _hold(caravan, sku, 3)  # 1 of A, 2 of B
    await _hold(caravan, sku, 2)  # 2 of B
    reserved = {
        e.data["order_id"]: e.data["held_until"]
        for e in caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved")
        if e.data["order_id"] in (first, second)
    }
    async with caravan.api("inventory") as api:
        held = (await api.get(f"/lots/{lot}/holds")).json()
        assert [(h["order_id"], h["quantity"]) for h in held["items"]] == [(first, 3), (second, 1)]
        assert held["totals"] == {"orders": 2, "held": 4} and held["lot"]["reserved"] == 4
        for h in held["items"]:
            until = datetime.fromisoformat(h["held_until"])
            assert until == datetime.fromisoformat(reserved[h["order_id"]]), h
            assert datetime.fromisoformat(h["held_at"]) < until, h
        paged = (await api.get(f"/lots/{lot}/holds", params={"limit": 1})).json()
        assert [h["order_id"] for h in paged["items"]] == [first] and paged["next_cursor"]
        unknown = await api.get(f"/lots/{sku}-NONE/holds")
        assert unknown.status_code == 404, unknown.text
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    url = ["--url", f"http://127.0.0.1:{caravan.procs.env['CARAVAN_INVENTORY_HTTP_PORT']}"]
    shown = runner.invoke(inventory_cli, ["holds", lot, *url])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].strip() == f"lot {lot}: 4 held by 2 order(s)", shown.output
    rows = [line for line in lines if first in line or second in line]
    assert [r.split("│")[1:3] for r in rows] == [
        [f" {first} ", "     3 "],
        [f" {second} ", "     1 "],
    ], shown.output
    assert [r.split("│")[3].strip() for r in rows] == [
        output.at(h["held_at"]) for h in held["items"]
    ], shown.output
    for h in held["items"]:
        assert output.at(h["held_until"]) in shown.output, shown.output
    cut = runner.invoke(inventory_cli, ["holds", lot, "--limit", "1", *url])
    assert cut.output.splitlines()[0].strip() == (
        f"lot {lot}: 4 held by 2 order(s), the oldest 1 listed: more with a higher --limit"
    ), cut.output
    as_json = orjson.loads(runner.invoke(inventory_cli, ["holds", lot, "--json", *url]).output)
    assert (as_json["holds"], as_json["more"]) == (held["items"], False)
    assert (as_json["totals"], as_json["lot"]["reserved"]) == ({"orders": 2, "held": 4}, 4)
    # The first order cancelled: its hold is gone, the total still the lot's reserved.
    cancelled = await caravan.client.post(f"/orders/{first}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=first)
    )
    async with caravan.api("inventory") as api:
        held = (await api.get(f"/lots/{lot}/holds")).json()
    assert [(h["order_id"], h["quantity"]) for h in held["items"]] == [(second, 1)]
    assert held["totals"] == {"orders": 1, "held": 1} and held["lot"]["reserved"] == 1
    cancelled = await caravan.client.post(f"/orders/{second}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=second)
    )
    none = runner.invoke(inventory_cli, ["holds", lot, *url])
    assert (none.exit_code, none.output) == (0, f"no order holding lot {lot}\n"), none.output
    missing = await cli(caravan, "inventory", "holds", f"{sku}-NONE", *url)
    assert missing.returncode == 1, missing.stderr
    assert missing.stderr.strip() == f"Unknown lot: no lot {sku}-NONE", missing.stderr

"""What each seller is owed, as an accountant settling with the sellers reads it (``GET
/payables``, ``caravan payments payables``): a confirmed order's payable owed, a cancelled
one's and a void-sold one's cancelled, each figure the ledger's; on real Kafka and
PostgreSQL."""

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared import days
from shared.events.inventory import ReservedLine, StockReserved
from shared.events.orders import PaymentRequest
from shared.seed import SeedFile
from shared.topics import Topic
from tests.e2e.test_ops import cli
from tests.e2e.test_payments_after_sale import void
from tests.e2e.test_payments_cli import sheet as read_sheet
from tests.e2e.test_payments_credit import (
    _publish,
    admin,
    buyer,
    cancel,
    event,
    order,
    run,
    set_limit,
)
from tests.harness import System

__all__ = ["admin"]  # the payments admin API, the module's reference data loaded

RUN = uuid.uuid4().hex[:8]  # the database outlives a session: a seller of each run's own
SELLER = f"payables-seller-{RUN}"
SKU, PRICE = f"PAYABLE-JAR-{RUN}".upper(), 2_500
NAME = f"Jujube coop {RUN}"  # the seed's name of the seller, which inventory alone keeps


def seed() -> SeedFile:
    """A seller of this run's own, so that its figures are this test's orders alone."""
    today = days.today()
    lot = {"quantity": 1_000, "available_from": str(today - timedelta(days=30))}
    return SeedFile.model_validate(
        {
            "sellers": [
                {"id": SELLER, "name": NAME, "county": "Shawan", "phone": "+8613000004099"}
            ],
            "products": [
                {"sku": SKU, "seller_id": SELLER, "unit_price_fen": PRICE, "name": {"en": SKU}}
            ],
            "lots": [
                {
                    "lot_id": f"LOT-{SKU}",
                    "sku": SKU,
                    "best_before": str(today + timedelta(days=365)),
                    **lot,
                }
            ],
        }
    )


FIGURES = ("orders", "owed_orders", "owed_fen", "cancelled_orders", "cancelled_fen")


async def authorised_then_cancelled(caravan: System, who: str, jars: int) -> str:
    """An order of the seller's ``jars`` whose loan payments authorised (the seller owed) and
    whose cancellation came after (expired: the saga's deadline passed meanwhile)."""
    order_id = str(uuid.uuid4())
    line = ReservedLine(sku=SKU, quantity=jars, unit_price_fen=PRICE, seller_id=SELLER, lots=[])
    data = StockReserved(
        order_id=order_id,
        buyer_id=who,
        payment=PaymentRequest(method="microloan", term_months=2),
        lines=[line],
        total_fen=jars * PRICE,
    )
    await _publish(caravan, event(data), Topic.INVENTORY_EVENTS, order_id)
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.PAYMENT_EVENTS, type="payment.authorized", order_id=order_id
        )
    )
    await cancel(caravan, order_id)
    return order_id


async def ledger(caravan: System, sign: str) -> int:
    """The sum of the seller's account's entries of ``sign`` (``< 0``: credited, owed;
    ``> 0``: debited, cancelled), as the ledger books them."""
    booked = (
        "select coalesce(sum(amount_fen), 0) from payments.ledger_entries"
        f" where account = :a and amount_fen {sign} 0"
    )
    return int(await caravan.scalar(booked, a=f"seller_payable:{SELLER}"))


async def test_a_sellers_payables_are_the_ledgers_owed_and_cancelled(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """Three orders of one seller: confirmed (3 jars, and a line of another seller's), its
    payment voided after the sale (2 jars), authorised and then cancelled (1 jar). The seller
    is owed the first alone; the other two are said cancelled, with when; every figure is
    the ledger's. A period after them holds none; a period backwards is refused. (No route or
    command said what a seller was owed: an accountant read payments.payables by SQL.)"""
    await caravan.seed(seed())
    who = buyer("payables")
    await set_limit(admin, who, 100_000)
    start = datetime.now(UTC)
    confirmed = await run(caravan, order(who, {SKU: 3, "PAY-UNIT": 1}))
    assert confirmed.type == "order.confirmed", confirmed
    sold = await run(caravan, order(who, {SKU: 2}))
    assert sold.type == "order.confirmed", sold
    await void(caravan, sold.data["order_id"], "spoiled on arrival")
    cancelled = await authorised_then_cancelled(caravan, who, 1)
    await caravan.until(
        lambda: caravan.scalar(
            "select count(*) from payments.payables"
            " where order_id = any(:o) and status = 'cancelled'",
            o=[sold.data["order_id"], cancelled],
        ),
        "the void after the sale and the cancellation to cancel the seller's payables",
        ready=lambda found: found == 2,
    )
    since = {"since": start.isoformat()}

    summed = await admin.get("/payables", params={**since, "seller_id": SELLER})
    assert summed.status_code == 200, summed.text
    mine = {
        "seller_id": SELLER,
        "orders": 3,
        "owed_orders": 1,
        "owed_fen": 3 * PRICE,
        "cancelled_orders": 2,
        "cancelled_fen": 3 * PRICE,
    }
    assert summed.json() == {
        "sellers": [mine],
        "orders": 3,
        "owed_fen": 7_500,
        "cancelled_fen": 7_500,
    }
    # The ledger's: credited 6 jars, debited back 3; what is owed is the account's balance.
    assert -await ledger(caravan, "<") == 6 * PRICE
    assert await ledger(caravan, ">") == mine["cancelled_fen"]
    balance = "select -sum(amount_fen) from payments.ledger_entries where account = :a"
    assert await caravan.scalar(balance, a=f"seller_payable:{SELLER}") == mine["owed_fen"]
    every = (await admin.get("/payables")).json()
    assert [s for s in every["sellers"] if s["seller_id"] == SELLER] == [mine]
    # The first order is of two sellers: each seller's orders count it, the total once.
    both = (await admin.get("/payables", params=since)).json()
    assert [s["orders"] for s in both["sellers"]] == [1, 3] and both["orders"] == 3, both

    listed = await admin.get(f"/payables/{SELLER}/orders", params={**since, "limit": 2})
    assert listed.status_code == 200, listed.text
    first = listed.json()
    rest = (
        await admin.get(
            f"/payables/{SELLER}/orders", params={**since, "cursor": first["next_cursor"]}
        )
    ).json()
    assert rest["next_cursor"] is None
    items: list[dict[str, Any]] = first["items"] + rest["items"]
    assert [(i["order_id"], i["amount_fen"], i["status"]) for i in items] == [
        (cancelled, PRICE, "cancelled"),
        (sold.data["order_id"], 2 * PRICE, "cancelled"),
        (confirmed.data["order_id"], 3 * PRICE, "owed"),
    ]
    assert items[2]["cancelled_at"] is None
    for i in items:
        assert i["owed_at"] >= start.isoformat(), i
        if i["status"] == "cancelled":
            assert i["cancelled_at"] >= i["owed_at"], i

    later = {"since": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    assert (await admin.get("/payables", params=later)).json()["sellers"] == []
    backwards = {"since": start.isoformat(), "until": start.isoformat()}
    refused = await admin.get("/payables", params=backwards)
    assert refused.status_code == 422, refused.text
    assert "`until` must be after `since`" in refused.json()["detail"]
    not_ops = await caravan.issue_token(f"payables-reader-{RUN}", "credit:read")
    async with caravan.api("payments", token=not_ops) as reader:
        assert (await reader.get("/payables")).status_code == 403

    url = f"http://127.0.0.1:{caravan.port('payments')}"
    asked = ("payments", "payables", "--seller", SELLER, "--since", start.isoformat(), "--url", url)
    printed = await cli(caravan, *asked, "--json")
    assert (printed.returncode, printed.stderr) == (0, ""), printed.stderr
    said = json.loads(printed.stdout)
    assert said["sellers"] == [{**mine, "seller_name": NAME}], said
    assert [p["order_id"] for p in said["payables"]] == [i["order_id"] for i in items]
    assert said["more"] is False
    shown = await cli(caravan, *asked, "--limit", "2")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "1 seller(s): 7500 fen owed, 7500 fen cancelled, of 3 order(s)", lines
    # The seller by its name beside its id (finance staff know the cooperatives by name).
    assert any(f"{SELLER} ({NAME})" in n and "7500" in n for n in lines), lines
    heading = f"seller {SELLER} ({NAME}): the last owed 2 order(s): more with a higher --limit"
    assert heading in lines, lines
    period = ("payments", "payables", "--since", start.isoformat(), "--url", url)
    titled = await cli(caravan, *period)
    assert titled.stdout.splitlines()[0] == (
        "2 seller(s): 7600 fen owed, 7500 fen cancelled, of 3 order(s)"
    ), titled.stdout
    assert f"{SELLER} ({NAME})" in titled.stdout, titled.stdout
    # For a spreadsheet: a row a seller, its figures the API's and its name last (a column
    # added after those scripts read); with --seller, a row an order.
    every = json.loads((await cli(caravan, *period, "--json")).stdout)
    sheet = await cli(caravan, *period, "--csv")
    assert (sheet.returncode, sheet.stderr) == (0, ""), sheet.stderr
    rows = read_sheet(sheet.stdout)
    assert list(rows[0]) == ["seller_id", *FIGURES, "seller_name"], rows
    assert [
        {k: int(v) if k in FIGURES else v or None for k, v in r.items()} for r in rows
    ] == every["sellers"]
    assert {r["seller_id"]: r["seller_name"] for r in rows}[SELLER] == NAME, rows
    sheet = await cli(caravan, *asked, "--csv", "--limit", "2")
    rows = read_sheet(sheet.stdout)
    assert [r["order_id"] for r in rows] == [i["order_id"] for i in items][:2], sheet.stdout
    assert {r["seller_id"] for r in rows} == {SELLER}, rows
    assert sheet.stderr == "the last owed 2 order(s): more with a higher --limit\n", sheet.stderr
    none = await cli(caravan, "payments", "payables", "--since", later["since"], "--url", url)
    assert none.returncode == 0, none.stderr
    assert none.stdout.startswith("no payable matches --since "), none.stdout


async def test_payables_print_without_names_where_inventory_cannot_say_them(
    caravan: System, admin: httpx.AsyncClient
) -> None:
    """The sellers' names are the inventory service's; what a seller is owed is the ledger's
    alone. With inventory away, or a token it refuses (finance staff's, ops alone), the
    payables still print, ids without names, and one line says why."""
    await caravan.seed(seed())
    who = buyer("payables-away")
    await set_limit(admin, who, 100_000)
    start = datetime.now(UTC)
    confirmed = await run(caravan, order(who, {SKU: 1}))
    assert confirmed.type == "order.confirmed", confirmed
    url = f"http://127.0.0.1:{caravan.port('payments')}"
    period = ("payments", "payables", "--since", start.isoformat(), "--url", url)
    with socket.socket() as probe:  # a port of this machine's that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = str(probe.getsockname()[1])
    away = {"CARAVAN_INVENTORY_HTTP_PORT": closed}
    shown = await cli(caravan, *period, "--seller", SELLER, **away)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"1 seller(s): {PRICE} fen owed, 0 fen cancelled, of 1 order(s)", lines
    assert NAME not in shown.stdout, shown.stdout
    said = [n for n in lines if n.startswith("sellers' names left out: ")]
    assert len(said) == 1 and "inventory API unreachable" in said[0], lines
    assert f"seller {SELLER}: 1 order(s)" in lines, lines
    sheet = await cli(caravan, *period, "--csv", **away)
    assert sheet.returncode == 0, sheet.stderr
    assert sheet.stderr.startswith("sellers' names left out: inventory API unreachable")
    assert [(r["seller_id"], r["seller_name"]) for r in read_sheet(sheet.stdout)] == [(SELLER, "")]
    printed = await cli(caravan, *period, "--json", **away)
    assert json.loads(printed.stdout)["sellers"][0]["seller_name"] is None, printed.stdout
    finance = await caravan.issue_token(f"payables-finance-{RUN}", "ops")
    refused = await cli(caravan, *period, CARAVAN_TOKEN=finance)
    assert refused.returncode == 0, refused.stderr
    said = [n for n in refused.stdout.splitlines() if n.startswith("sellers' names left out: ")]
    assert len(said) == 1 and "lacks the scope inventory:read" in said[0], refused.stdout
    assert NAME not in refused.stdout, refused.stdout

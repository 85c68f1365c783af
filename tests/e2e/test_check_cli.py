"""``caravan check`` on real orders: a prepaid order and a microloan's, placed and confirmed by
the session's services, their rows copied to a database of the test's own (migrated by
``caravan prepare``: the session's database holds the money other tests lend and charge for
orders the orders service never had, on purpose, which the check would report), then checked
as they are (no violation, exit 0) and with a prepaid charge booked twice by hand in the ledger
(reported with its evidence, exit 1; ``--json`` alike)."""

import json
import re
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

import pytest
from sqlalchemy import ColumnElement, Table, insert, select

from services.inventory.adapters import tables as inventory
from services.orders.adapters import tables as orders
from services.payments.adapters import tables as payments
from shared.db.engine import async_engine
from tests.e2e.test_ops import cli
from tests.e2e.test_saga import RICH, ZH, order
from tests.harness import System, scratch_database


@dataclass(frozen=True)
class Books:
    url: str  # the test's own database, holding the two orders
    prepaid: str  # the prepaid order's id
    loan: str  # the microloan order's id


async def copy(caravan: System, url: str, order_ids: Collection[str]) -> None:
    """Copy the rows the checks read of ``order_ids`` (and the lots, products and sellers
    they reserved, the buyers' credit lines, the ledger transactions of the orders and their
    loans) from the session's database to the one at ``url``, in one transaction. An id
    column the database numbers is left for it to number."""
    assert caravan.engine is not None
    ids = list(order_ids)
    lines = inventory.reservation_lines
    lots = select(lines.c.lot_id).where(lines.c.order_id.in_(ids))
    skus = select(inventory.lots.c.sku).where(inventory.lots.c.lot_id.in_(lots))
    sellers = select(inventory.products.c.seller_id).where(inventory.products.c.sku.in_(skus))
    buyers = select(payments.payments.c.buyer_id).where(payments.payments.c.order_id.in_(ids))
    loans = select(payments.loans.c.loan_id).where(payments.loans.c.order_id.in_(ids))
    entries = payments.ledger_entries
    txns = select(entries.c.txn_id).where(
        entries.c.order_id.in_(ids) | entries.c.loan_id.in_(loans)
    )
    chosen: list[tuple[Table, ColumnElement[bool]]] = [
        (orders.orders, orders.orders.c.order_id.in_(ids)),
        (inventory.sellers, inventory.sellers.c.seller_id.in_(sellers)),
        (inventory.products, inventory.products.c.sku.in_(skus)),
        (inventory.lots, inventory.lots.c.lot_id.in_(lots)),
        (inventory.reservations, inventory.reservations.c.order_id.in_(ids)),
        (lines, lines.c.order_id.in_(ids)),
        (payments.credit_lines, payments.credit_lines.c.buyer_id.in_(buyers)),
        (payments.payments, payments.payments.c.order_id.in_(ids)),
        (payments.loans, payments.loans.c.order_id.in_(ids)),
        (entries, entries.c.txn_id.in_(txns)),
        (payments.payables, payments.payables.c.order_id.in_(ids)),
    ]
    target = async_engine(url)
    try:
        async with caravan.engine.connect() as source, target.begin() as conn:
            for table, where in chosen:
                numbered = {c.name for c in table.columns if c.autoincrement is True}
                rows = [
                    {k: v for k, v in row.items() if k not in numbered}
                    for row in (await source.execute(select(table).where(where))).mappings()
                ]
                assert rows, f"no row of {table.fullname} to copy"
                await conn.execute(insert(table), rows)
    finally:
        await target.dispose()


@pytest.fixture(scope="module")
async def books(caravan: System) -> AsyncIterator[Books]:
    prepaid, loan = order(RICH, {"T-PEPPER": 1}), order(ZH, {"T-HONEY": 1}, "microloan", 3)
    ids = []
    for req in (prepaid, loan):
        await caravan.request(req)
        ids.append(await caravan.placed(req.order_ref))
    for order_id in ids:
        assert (await caravan.outcome(order_id)).type == "order.confirmed"
    async with scratch_database(caravan.infra.database_url, "caravan_check") as url:
        prepared = await cli(caravan, "prepare", DATABASE_URL=url)
        assert prepared.returncode == 0, prepared.stderr
        await copy(caravan, url, ids)
        yield Books(url, *ids)


async def test_the_books_of_real_orders_hold(caravan: System, books: Books) -> None:
    done = await cli(caravan, "check", DATABASE_URL=books.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.match(
        r"checked 2 orders, 2 reservations, \d+ lots, 2 payments, 1 loans,"
        r" \d+ ledger entries, \d+ payables in one snapshot \(read in [\d.]+ s, checked in",
        done.stdout,
    ), done.stdout
    assert done.stdout.splitlines()[-1] == "no violation"


async def test_a_charge_booked_twice_is_said_with_its_evidence(
    caravan: System, books: Books
) -> None:
    """A second ``prepaid_charged`` transaction of the prepaid order, balanced, as a double
    charge by hand: ``money_taken_once``, naming both transactions and the runbook there is
    (none: a bug); the JSON says the same."""
    entries = payments.ledger_entries
    engine = async_engine(books.url)
    again = f"test-charged-twice-{uuid.uuid4()}"
    try:
        async with engine.begin() as conn:
            charged = (
                await conn.execute(
                    select(
                        entries.c.txn_id, entries.c.kind, entries.c.account, entries.c.amount_fen
                    )
                    .where(entries.c.order_id == books.prepaid)
                    .where(entries.c.kind == "prepaid_charged")
                )
            ).all()
            assert len({row.txn_id for row in charged}) == 1, charged
            await conn.execute(
                insert(entries),
                [{**row._asdict(), "txn_id": again, "order_id": books.prepaid} for row in charged],
            )
    finally:
        await engine.dispose()
    txns = sorted([charged[0].txn_id, again])

    done = await cli(caravan, "check", DATABASE_URL=books.url)
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout
    assert "1 violation(s) of 1 check(s)" in said, said
    assert (
        "money_taken_once (1): no order's money taken in twice (a loan disbursed, a prepaid"
        " charge, a platform's collection), and each authorised payment taken in once"
    ) in said, said
    assert "runbook: none: Caravan's services never do this; a bug, or a change" in said, said
    row = next(line for line in said.splitlines() if books.prepaid in line)
    assert f"2 transactions: {txns}" in row, said

    as_json = await cli(caravan, "check", "--json", DATABASE_URL=books.url)
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    found = json.loads(as_json.stdout)
    assert set(found) == {"checked", "checks", "read_seconds", "check_seconds", "violations"}
    assert found["checked"]["orders"] == 2 and found["checked"]["loans"] == 1, found
    assert "money_taken_once" in found["checks"] and "stock_conserved" in found["checks"]
    assert found["violations"] == [
        {
            "check": "money_taken_once",
            "subject": books.prepaid,
            "evidence": f"2 transactions: {txns}",
            "means": "no order's money taken in twice (a loan disbursed, a prepaid charge, a"
            " platform's collection), and each authorised payment taken in once",
            "runbook": None,
        }
    ]

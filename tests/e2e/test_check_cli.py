"""``caravan check`` on real orders: a prepaid order and two microloans', placed and confirmed
by the session's services, one of the loans then voided after the sale (its buyer refunded:
``caravan payments void-sold``), their rows copied to a database of the test's own (migrated
by ``caravan prepare``: the session's database holds the money other tests lend and charge for
orders the orders service never had, on purpose, which the check would report), then checked
as they are (no violation, exit 0), with a prepaid charge booked twice by hand in the ledger,
and, each in a copy of its own, with the seller debited back by hand in the ledger, its
payable owed still, with a payable owed to a seller the ledger never credited, and with a
payable credited twice (each reported with its evidence, exit 1; ``--json`` alike)."""

import json
import re
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import ColumnElement, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from caravan.reliability.history import DATABASE_CHECKS
from services.inventory.adapters import tables as inventory
from services.orders.adapters import tables as orders
from services.payments import payables
from services.payments.adapters import tables as payments
from shared.db.engine import async_engine
from tests.e2e.test_ops import cli
from tests.e2e.test_payments_after_sale import void
from tests.e2e.test_saga import RICH, ZH, order
from tests.harness import System, scratch_database


@dataclass(frozen=True)
class Sold:
    prepaid: str  # the prepaid order's id
    loan: str  # a microloan order's id
    refunded: str  # another's, its loan voided after the sale


@dataclass(frozen=True)
class Books(Sold):
    url: str  # the test's own database, holding the orders


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
async def sold(caravan: System) -> Sold:
    """A prepaid order and two microloans' confirmed; the second loan voided after the sale."""
    requests = (
        order(RICH, {"T-PEPPER": 1}),
        order(ZH, {"T-HONEY": 1}, "microloan", 3),
        order(ZH, {"T-RAISIN": 1}, "microloan", 2),
    )
    ids = []
    for req in requests:
        await caravan.request(req)
        ids.append(await caravan.placed(req.order_ref))
    for order_id in ids:
        assert (await caravan.outcome(order_id)).type == "order.confirmed"
    await void(caravan, ids[2], "refunded after the sale")
    return Sold(*ids)


@asynccontextmanager
async def books_of(caravan: System, sold: Sold) -> AsyncIterator[Books]:
    """The orders of ``sold`` copied to a database of their own, dropped afterwards."""
    async with scratch_database(caravan.infra.database_url, "caravan_check") as url:
        prepared = await cli(caravan, "prepare", DATABASE_URL=url)
        assert prepared.returncode == 0, prepared.stderr
        await copy(caravan, url, [sold.prepaid, sold.loan, sold.refunded])
        yield Books(sold.prepaid, sold.loan, sold.refunded, url)


@pytest.fixture(scope="module")
async def books(caravan: System, sold: Sold) -> AsyncIterator[Books]:
    async with books_of(caravan, sold) as found:
        yield found


async def test_the_books_of_real_orders_hold(caravan: System, books: Books) -> None:
    done = await cli(caravan, "check", DATABASE_URL=books.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.match(
        r"checked 3 orders, 3 reservations, \d+ lots, 3 payments, 2 loans,"
        r" \d+ ledger entries, \d+ payables in one snapshot \(read in [\d.]+ s, checked in",
        done.stdout,
    ), done.stdout
    assert done.stdout.splitlines()[-1] == "no violation"


async def test_a_charge_booked_twice_is_said_with_its_evidence(
    caravan: System, books: Books
) -> None:
    """A second ``prepaid_charged`` transaction of the prepaid order, balanced, as a double
    charge by hand: ``money_taken_once``, naming both transactions and the runbook there is
    (none: a bug); the JSON says the same. Its seller credited twice for the one payable is
    ``payables_agree_with_the_ledger``'s too."""
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
    assert "2 violation(s) of 2 check(s)" in said, said
    assert (
        "money_taken_once (1): no order's money taken in twice (a loan disbursed, a prepaid"
        " charge, a platform's collection), and each authorised payment taken in once"
    ) in said, said
    assert "runbook: none: Caravan's services never do this; a bug, or a change" in said, said
    row = next(line for line in said.splitlines() if "2 transactions" in line)
    assert f"2 transactions: {txns}" in row, said

    as_json = await cli(caravan, "check", "--json", DATABASE_URL=books.url)
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    found = json.loads(as_json.stdout)
    assert set(found) == {"checked", "checks", "read_seconds", "check_seconds", "violations"}
    assert found["checked"]["orders"] == 3 and found["checked"]["loans"] == 2, found
    assert "money_taken_once" in found["checks"] and "stock_conserved" in found["checks"]
    twice = {v["check"]: v for v in found["violations"]}
    assert twice.keys() == {"money_taken_once", "payables_agree_with_the_ledger"}, found
    assert "; 2 credits)" in twice.pop("payables_agree_with_the_ledger")["evidence"], found
    assert list(twice.values()) == [
        {
            "check": "money_taken_once",
            "subject": books.prepaid,
            "evidence": f"2 transactions: {txns}",
            "means": "no order's money taken in twice (a loan disbursed, a prepaid charge, a"
            " platform's collection), and each authorised payment taken in once",
            "runbook": None,
        }
    ]


async def figures(conn: AsyncConnection) -> dict[str, tuple[int, int, int, int]]:
    """Each seller's owed and cancelled fen as ``caravan payments payables`` reads them (of all
    time: ``GET /payables`` without a period), then its account's balance in the ledger and
    what the ledger debited back to it."""
    entries = payments.ledger_entries
    sellers, _ = await payables.by_seller(conn, payables.Period())
    summed = func.sum(entries.c.amount_fen)
    found = {}
    for s in sellers:
        account = entries.c.account == f"seller_payable:{s['seller_id']}"
        debits = func.coalesce(summed.filter(entries.c.amount_fen > 0), 0)
        read = select(-func.coalesce(summed, 0), debits).where(account)
        owed, debited = (await conn.execute(read)).one()
        found[s["seller_id"]] = (s["owed_fen"], s["cancelled_fen"], int(owed), int(debited))
    return found


async def payable_fen(conn: AsyncConnection, order_id: str) -> int:
    """The fen of the one payable of ``order_id``."""
    of_order = payments.payables.c.order_id == order_id
    fen: int = (await conn.execute(select(payments.payables.c.amount_fen).where(of_order))).one()[0]
    return fen


async def by_hand(conn: AsyncConnection, order_id: str, seller: str, fen: int) -> None:
    """A balanced transaction by hand of ``order_id`` debiting ``seller``'s account ``fen``
    (a credit: below 0), out of what the gateway holds."""
    txn = {"txn_id": f"test-by-hand-{uuid.uuid4()}", "kind": "by_hand", "order_id": order_id}
    await conn.execute(
        insert(payments.ledger_entries),
        [
            {**txn, "account": f"seller_payable:{seller}", "amount_fen": fen},
            {**txn, "account": "gateway_clearing", "amount_fen": -fen},
        ],
    )


async def test_a_seller_whose_payables_differ_from_the_ledger_is_named_with_both_figures(
    caravan: System, sold: Sold
) -> None:
    """The books of the orders agree (each seller's owed fen in payables its account's balance,
    its cancelled fen what the ledger debited back); then a balanced transaction by hand
    debits the seller 500 fen of the prepaid order (a part refunded in the ledger alone), its
    payable left owed: ``payables_agree_with_the_ledger`` names the seller, the ledger's
    figures and payables' (as ``caravan payments payables`` reads them), and the order; the
    JSON alike."""
    async with books_of(caravan, sold) as books:
        engine = async_engine(books.url)
        try:
            async with engine.begin() as conn:
                [(seller, (owed, cancelled, *ledger))] = (await figures(conn)).items()
                assert ledger == [owed, cancelled] and cancelled > 0, (owed, cancelled, ledger)
                fen = await payable_fen(conn, books.prepaid)
                await by_hand(conn, books.prepaid, seller, 500)
            async with engine.connect() as conn:
                assert await figures(conn) == {
                    seller: (owed, cancelled, owed - 500, cancelled + 500)
                }
        finally:
            await engine.dispose()
        figured = (
            f"the ledger owes it {owed - 500} fen, payables {owed} fen; debited back"
            f" {cancelled + 500} fen, payables cancelled {cancelled} fen;"
        )
        evidence = (
            f"{figured} 1 order(s) differ: {books.prepaid} (ledger {fen - 500} owed, 500 back;"
            f" payables {fen} owed, 0 cancelled)"
        )

        done = await cli(caravan, "check", DATABASE_URL=books.url)
        assert done.returncode == 1, done.stdout + done.stderr
        said = done.stdout
        assert "1 violation(s) of 1 check(s)" in said, said
        assert "payables_agree_with_the_ledger (1): each seller is owed in payables" in said, said
        row = next(line for line in said.splitlines() if seller in line)
        assert figured in row and books.prepaid in said, said  # the table wraps the evidence

        as_json = await cli(caravan, "check", "--json", DATABASE_URL=books.url)
        assert as_json.returncode == 1, as_json.stdout + as_json.stderr
        [found] = json.loads(as_json.stdout)["violations"]
        assert (found["check"], found["subject"], found["evidence"]) == (
            "payables_agree_with_the_ledger",
            seller,
            evidence,
        ), found


async def violations_of(caravan: System, url: str) -> list[dict[str, str]]:
    """``caravan check --json``'s violations of the database at ``url`` (exit 1)."""
    done = await cli(caravan, "check", "--json", DATABASE_URL=url)
    assert done.returncode == 1, done.stdout + done.stderr
    found: list[dict[str, str]] = json.loads(done.stdout)["violations"]
    return found


async def test_a_payable_owed_that_the_ledger_never_credited_names_its_seller(
    caravan: System, sold: Sold
) -> None:
    """The prepaid order's payable split between its seller and one more (700 fen of it owed
    to ``t-never-credited``: the sellers still owed the payment in full), the ledger's credit
    all the first seller's: the second, whom neither ``caravan payments payables`` (read
    through the ledger's credits) nor the ledger lists, is named with its 700 fen."""
    async with books_of(caravan, sold) as books:
        engine = async_engine(books.url)
        table = payments.payables
        try:
            async with engine.begin() as conn:
                of_prepaid = table.c.order_id == books.prepaid
                [seller] = (await conn.execute(select(table.c.seller_id).where(of_prepaid))).all()
                await conn.execute(
                    table.update().where(of_prepaid).values(amount_fen=table.c.amount_fen - 700)
                )
                await conn.execute(
                    insert(table).values(
                        order_id=books.prepaid,
                        seller_id="t-never-credited",
                        amount_fen=700,
                        status="owed",
                    )
                )
                assert (await figures(conn)).keys() == {seller.seller_id}  # payables' list
        finally:
            await engine.dispose()

        found = {v["subject"]: v for v in await violations_of(caravan, books.url)}
        assert found.keys() == {seller.seller_id, "t-never-credited"}, found
        assert found["t-never-credited"]["evidence"] == (
            "the ledger owes it 0 fen, payables 700 fen; debited back 0 fen, payables cancelled"
            f" 0 fen; 1 order(s) differ: {books.prepaid} (ledger 0 owed, 0 back; payables 700"
            " owed, 0 cancelled; never credited)"
        ), found


async def test_a_payable_credited_twice_is_named(caravan: System, sold: Sold) -> None:
    """The seller credited the prepaid order's fen a second time, by a balanced transaction
    by hand (no money taken in: ``money_taken_once`` does not see it): ``caravan payments
    payables`` lists the payable twice, as the ledger owes it twice, so the two agree; the
    check names the seller and the order, its two credits against the payable's one fen."""
    async with books_of(caravan, sold) as books:
        engine = async_engine(books.url)
        try:
            async with engine.begin() as conn:
                [(seller, (owed, cancelled, *_))] = (await figures(conn)).items()
                fen = await payable_fen(conn, books.prepaid)
                await by_hand(conn, books.prepaid, seller, -fen)
                twice = (owed + fen, cancelled)
                assert await figures(conn) == {seller: (*twice, *twice)}
        finally:
            await engine.dispose()

        assert await violations_of(caravan, books.url) == [
            {
                "check": "payables_agree_with_the_ledger",
                "subject": seller,
                "evidence": f"the ledger owes it {owed + fen} fen, payables {owed} fen; debited"
                f" back {cancelled} fen, payables cancelled {cancelled} fen; 1 order(s) differ:"
                f" {books.prepaid} (ledger {2 * fen} owed, 0 back; payables {fen} owed, 0"
                " cancelled; 2 credits)",
                "means": DATABASE_CHECKS["payables_agree_with_the_ledger"].means,
                "runbook": None,
            }
        ]

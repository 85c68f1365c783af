"""The ledger check, run after the end-to-end tests (this module's name sorts last): every
money movement of the session balanced, and every confirmed order paid exactly once."""

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.harness import System


async def test_every_ledger_transaction_and_loan_sums_to_zero(caravan: System) -> None:
    assert await caravan.scalar("select count(*) from payments.ledger_entries") > 0
    unbalanced = await caravan.sql(
        "select txn_id, sum(amount_fen) from payments.ledger_entries"
        " group by txn_id having sum(amount_fen) <> 0"
    )
    assert unbalanced == []
    per_loan = await caravan.sql(
        "select loan_id, sum(amount_fen) from payments.ledger_entries"
        " where loan_id is not null group by loan_id having sum(amount_fen) <> 0"
    )
    assert per_loan == []
    assert (
        await caravan.scalar("select coalesce(sum(amount_fen), 0) from payments.ledger_entries")
        == 0
    )


async def test_receivables_match_outstanding_principal_and_payables_match_payments(
    caravan: System,
) -> None:
    mismatched_loans = await caravan.sql(
        "select l.loan_id, l.outstanding_fen, coalesce(sum(e.amount_fen), 0)"
        " from payments.loans l left join payments.ledger_entries e"
        "   on e.loan_id = l.loan_id and e.account = 'loan_receivable'"
        " group by l.loan_id, l.outstanding_fen"
        " having l.outstanding_fen <> coalesce(sum(e.amount_fen), 0)"
    )
    assert mismatched_loans == []
    unpaid_sellers = await caravan.sql(
        "select p.order_id, p.amount_fen, coalesce(sum(b.amount_fen), 0)"
        " from payments.payments p left join payments.payables b"
        "   on b.order_id = p.order_id and b.status = 'owed'"
        " where p.status = 'authorized'"
        " group by p.order_id, p.amount_fen having p.amount_fen <> coalesce(sum(b.amount_fen), 0)"
    )
    assert unpaid_sellers == []


async def test_every_confirmed_order_has_exactly_one_authorised_payment(caravan: System) -> None:
    confirmed = await caravan.scalar(
        "select count(*) from orders.orders where status = 'confirmed'"
    )
    assert confirmed > 0
    wrong = await caravan.sql(
        "select o.order_id, count(p.order_id) from orders.orders o"
        " left join payments.payments p on p.order_id = o.order_id and p.status = 'authorized'"
        " where o.status = 'confirmed'"
        " group by o.order_id having count(p.order_id) <> 1"
    )
    assert wrong == []
    # And no cancelled order keeps a loan or a charge.
    kept = await caravan.sql(
        "select o.order_id, p.status from orders.orders o"
        " join payments.payments p on p.order_id = o.order_id"
        " where o.status = 'cancelled' and p.status = 'authorized'"
    )
    assert kept == []


async def test_the_database_refuses_unbalanced_or_changed_entries(caravan: System) -> None:
    assert caravan.engine is not None
    txn = f"test-unbalanced-{uuid.uuid4()}"
    with pytest.raises(DBAPIError, match="does not balance"):
        async with caravan.engine.begin() as conn:
            await conn.execute(
                text(
                    "insert into payments.ledger_entries (txn_id, kind, account, amount_fen)"
                    " values (:t, 'test', 'a', 5), (:t, 'test', 'b', -4)"
                ),
                {"t": txn},
            )
    with pytest.raises(DBAPIError, match="append-only"):
        async with caravan.engine.begin() as conn:
            await conn.execute(text("update payments.ledger_entries set amount_fen = amount_fen"))
    assert (
        await caravan.scalar(
            "select count(*) from payments.ledger_entries where txn_id = :t", t=txn
        )
        == 0
    )

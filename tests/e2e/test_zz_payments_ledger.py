"""The money checks, run after the end-to-end tests (this module's name sorts last) over
every money movement they made: the history checker's :func:`check_money`, which the
reliability runs (``tests/reliability``, collected after this folder) run again over the
whole database after their faults. Under ``make test``'s workers, each its own database,
it runs on each after the other tests there (``tests/workers.py``). The orders tests placed
as orders or inventory would (payments' tests lend and charge for orders the orders service
never had, on purpose) are theirs (:meth:`System.placed_elsewhere`): any other money held
for an order ``orders.orders`` lacks is a violation."""

import uuid

import pytest
from sqlalchemy.exc import DBAPIError

from caravan.reliability.history import check_money, read_database
from tests.harness import System


async def test_the_ledger_balances_and_no_order_was_paid_for_twice(caravan: System) -> None:
    assert caravan.engine is not None
    db = await read_database(caravan.engine)
    assert db.ledger and "confirmed" in db.orders.values()  # there was money to check
    violations = check_money(db, await caravan.placed_elsewhere())
    assert violations == [], "\n".join(map(str, violations[:30]))


async def test_the_database_refuses_unbalanced_or_changed_entries(caravan: System) -> None:
    assert caravan.engine is not None
    txn = f"test-unbalanced-{uuid.uuid4()}"
    with pytest.raises(DBAPIError, match="does not balance"):
        await caravan.execute(
            "insert into payments.ledger_entries (txn_id, kind, account, amount_fen)"
            " values (:t, 'test', 'a', 5), (:t, 'test', 'b', -4)",
            t=txn,
        )
    with pytest.raises(DBAPIError, match="append-only"):
        await caravan.execute("update payments.ledger_entries set amount_fen = amount_fen")
    assert (
        await caravan.scalar(
            "select count(*) from payments.ledger_entries where txn_id = :t", t=txn
        )
        == 0
    )

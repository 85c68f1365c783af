"""Posting ledger transactions to ``payments.ledger_entries`` and reading them back.

A transaction's entries are merged per account and inserted when the database transaction
commits, with the other rows of the table (:meth:`Tx.insert_later`); the database checks at
commit that they sum to zero, and the unique (``txn_id``, ``account``) key makes posting
the same transaction twice fail rather than double-count.
"""

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payments.adapters.tables import ledger_entries
from services.payments.domain.ledger import Entry, balanced
from shared.db import driver
from shared.messaging.uow import Tx


def post(
    tx: Tx,
    txn_id: str,
    kind: str,
    entries: list[Entry],
    *,
    order_id: str | None = None,
    loan_id: str | None = None,
) -> None:
    merged: dict[str, int] = {}
    for entry in entries:
        merged[entry.account] = merged.get(entry.account, 0) + entry.amount_fen
    rows = balanced([Entry(a, v) for a, v in merged.items()])
    for e in rows:
        tx.insert_later(
            ledger_entries,
            {
                "txn_id": txn_id,
                "kind": kind,
                "account": e.account,
                "amount_fen": e.amount_fen,
                "order_id": order_id,
                "loan_id": loan_id,
            },
        )


async def entries_of(conn: AsyncConnection, txn_id: str) -> list[Entry]:
    return (await entries_of_all(conn, [txn_id]))[txn_id]


_ENTRIES = (
    select(ledger_entries.c.txn_id, ledger_entries.c.account, ledger_entries.c.amount_fen)
    .where(driver.any_of(ledger_entries.c.txn_id))
    .order_by(ledger_entries.c.id)
)


async def entries_of_all(conn: AsyncConnection, txn_ids: Sequence[str]) -> dict[str, list[Entry]]:
    """The entries posted under each of ``txn_ids`` (none: an empty list), in one statement."""
    found: dict[str, list[Entry]] = {txn_id: [] for txn_id in txn_ids}
    if txn_ids:
        for r in await driver.fetch(conn, _ENTRIES, keys=list(txn_ids)):
            found[r.txn_id].append(Entry(r.account, r.amount_fen))
    return found


async def balance_of_loan(conn: AsyncConnection, loan_id: str, account: str) -> int:
    """The sum of ``account``'s entries posted for the loan ``loan_id`` (0: none)."""
    return (await balances_of_loans(conn, [loan_id], account))[loan_id]


async def balances_of_loans(
    conn: AsyncConnection, loan_ids: Sequence[str], account: str
) -> dict[str, int]:
    """:func:`balance_of_loan` of each of ``loan_ids``, in one statement (none: no statement)."""
    found = dict.fromkeys(loan_ids, 0)
    if loan_ids:
        rows = await conn.execute(
            select(ledger_entries.c.loan_id, func.sum(ledger_entries.c.amount_fen))
            .where(ledger_entries.c.loan_id.in_(list(found)), ledger_entries.c.account == account)
            .group_by(ledger_entries.c.loan_id)
        )
        found.update({loan_id: int(total) for loan_id, total in rows})
    return found

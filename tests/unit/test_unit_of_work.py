"""The unit of work's transaction (shared/messaging/uow.py): what the copies of one
transaction, one a record handled in a batch, share and what each has of its own."""

from dataclasses import fields
from typing import Any, cast

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events.envelope import new_event
from shared.events.inventory import StockSold
from shared.messaging.tables import add_messaging_tables
from shared.messaging.uow import Tx

OWN = {"cause", "emitted"}
"""What each record handled has of its own (:meth:`Tx.caused_by`); the rest is the
transaction's, which every copy shares."""


def test_a_copy_for_a_record_shares_all_but_its_cause_and_its_events() -> None:
    """Every field of the transaction but the cause and the events emitted is the same object
    in the copy: rows written at commit, signals, callbacks and what repositories loaded are
    the transaction's, whichever record's handler added them. A field added to :class:`Tx`
    and not passed on by :meth:`Tx.caused_by` fails here."""
    outbox, inbox = add_messaging_tables(MetaData(schema="test"))
    conn = cast(AsyncConnection, object())
    tx = Tx(conn=conn, source="caravan/test", outbox=outbox, inbox=inbox)
    tx.emitted.append(new_event(StockSold(order_id="o-0"), source="caravan/test"))
    cause = new_event(StockSold(order_id="o-1"), source="caravan/test")
    copy = tx.caused_by(cause)
    assert copy.cause is cause
    assert copy.emitted == []
    assert copy.emitted is not tx.emitted
    shared: dict[str, Any] = {f.name: getattr(tx, f.name) for f in fields(Tx) if f.name not in OWN}
    assert shared, "Tx has fields shared by its copies"
    assert {name: getattr(copy, name) for name in shared} == shared
    unshared = [name for name, value in shared.items() if getattr(copy, name) is not value]
    assert unshared == []
    assert {f.name for f in fields(Tx)} >= OWN

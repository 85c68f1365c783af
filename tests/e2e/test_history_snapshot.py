"""The history checker's database state is one snapshot: a failure drill run against a live
system got a false ``confirmed_has_payment`` violation, an order confirmed between the
checker's read of ``payments.payments`` and its read of ``orders.orders``, each read seeing
what had committed by then."""

import uuid
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from caravan.reliability.history import read_database
from tests.harness import System


async def test_a_row_committed_while_the_checker_reads_is_not_in_what_it_read(
    caravan: System,
) -> None:
    seller = f"test-snapshot-{uuid.uuid4().hex[:8]}"
    url = caravan.infra.database_url.replace("postgresql://", "postgresql+asyncpg://")
    engine = create_async_engine(url)
    read: list[str] = []

    def after_each_read(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        """After the checker's first read, a seller committed by another connection (sync
        code: the listener runs in the checker's own call, where the engine's I/O may run)."""
        if statement.startswith("select"):
            read.append(statement)
            if len(read) == 1:
                with engine.sync_engine.begin() as other:
                    other.execute(
                        text(
                            "insert into notifications.sellers (seller_id, phone) values (:s, '1')"
                        ),
                        {"s": seller},
                    )

    event.listen(engine.sync_engine, "after_cursor_execute", after_each_read)
    try:
        db = await read_database(engine)
    finally:
        await caravan.execute("delete from notifications.sellers where seller_id = :s", s=seller)
        await engine.dispose()
    assert any("from notifications.sellers" in s for s in read[1:]), read  # read after it
    assert seller not in db.seller_phones

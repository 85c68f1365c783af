"""Payments' part of ``caravan seed`` (services/payments/handlers.load_seed) asks who acts
once per run, not once per buyer: ``audit.os_actor`` reads the settings (about 1.7 ms), and
the seed's transaction holds the buyers' rows locked meanwhile."""

import asyncio
from typing import Any, cast

import pytest
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payments import handlers
from shared.auth import audit
from shared.db import driver
from shared.messaging.uow import Tx
from shared.seed import SeedFile


class _Connection:
    """Every buyer is new (no credit line yet); statements are only counted."""

    def __init__(self) -> None:
        self.statements = 0

    async def execute(self, statement: Any, params: Any = None) -> list[Any]:
        self.statements += 1
        return []  # no line found


def test_the_actor_is_read_once_for_a_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def os_actor() -> str:
        asked.append("asked")
        return "operator"

    inserted: list[int] = []

    async def insert_new(conn: Any, table: Table, key: str, rows: list[dict[str, Any]]) -> set[str]:
        inserted.append(len(rows))
        return {row[key] for row in rows}  # each opens its line

    monkeypatch.setattr(audit, "os_actor", os_actor)
    monkeypatch.setattr(driver, "insert_new", insert_new)
    buyers = [
        {"id": f"b-{i}", "phone": f"+861391234567{i}", "locale": "en", "credit_limit_fen": 100}
        for i in range(3)
    ]
    seed = SeedFile.model_validate({"sellers": [], "products": [], "lots": [], "buyers": buyers})
    conn = _Connection()
    tx = Tx(
        conn=cast(AsyncConnection, conn),
        source="test",
        outbox=cast(Table, None),
        inbox=cast(Table, None),
    )
    asyncio.run(handlers.load_seed(tx, seed))
    # The lines looked up and opened in one statement each, the audit rows at the commit.
    assert (conn.statements, inserted) == (1, [3])
    assert [len(rows) for rows in tx.unwritten.values()] == [3]
    assert asked == ["asked"]

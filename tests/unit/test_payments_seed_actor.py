"""Payments' part of ``caravan seed`` (services/payments/handlers.load_seed) asks who acts
once per run, not once per buyer: ``audit.os_actor`` reads the settings (about 1.7 ms), and
the seed's transaction holds the buyers' rows locked meanwhile."""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payments import handlers
from shared.auth import audit
from shared.messaging.uow import Tx
from shared.seed import SeedFile


class _Connection:
    """Every buyer is new (no credit line yet); statements are only counted."""

    def __init__(self) -> None:
        self.statements = 0

    async def scalar(self, statement: Any) -> None:
        return None

    async def execute(self, statement: Any) -> SimpleNamespace:
        self.statements += 1
        return SimpleNamespace(rowcount=1)  # each insert opens its line


def test_the_actor_is_read_once_for_a_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def os_actor() -> str:
        asked.append("asked")
        return "operator"

    monkeypatch.setattr(audit, "os_actor", os_actor)
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
    assert conn.statements == 6  # each buyer's credit line and its audit row
    assert asked == ["asked"]

"""An engine's connection that the server never answers fails within the connect timeout,
as one refused does: a :class:`ConnectionError` saying so, which services retry."""

import asyncio
import time

import pytest
from sqlalchemy import text

from shared.db import Database, is_transient
from shared.settings import Settings
from tests.unit.test_cli_unreachable import silent_port


async def test_a_connection_never_answered_fails_within_the_timeout_as_transient() -> None:
    """A service's engine waited asyncpg's minute for each connection, then raised a bare
    ``TimeoutError``."""
    with silent_port() as port:
        settings = Settings(
            DATABASE_URL=f"postgresql://u:p@127.0.0.1:{port}/x", db_connect_timeout_seconds=0.5
        )
        db = Database(settings, "orders")
        started = time.monotonic()
        try:
            async with asyncio.timeout(10):
                with pytest.raises(ConnectionError) as raised:
                    async with db.transaction() as conn:
                        await conn.execute(text("select 1"))
        finally:
            await db.dispose()
    assert time.monotonic() - started < 5
    assert str(raised.value) == f"PostgreSQL at 127.0.0.1:{port} did not answer within 0.5 s"
    assert is_transient(raised.value)

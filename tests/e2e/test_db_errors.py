"""What a failing statement of a service's engine (shared/db/engine.py) says: the statement,
never its values. Consumers log the traceback of a record they give up on, HTTP 500s log
theirs, and a statement's values are buyers' addresses, phone numbers and texts."""

import traceback

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from caravan import system
from shared.db import Database
from shared.settings import Settings

ADDRESS = "Shawan County, 3 Jujube Lane, +8613912345678"


async def test_a_failing_statement_says_none_of_its_values(
    infrastructure: system.Infrastructure,
) -> None:
    db = Database(Settings(DATABASE_URL=infrastructure.database_url), "orders")
    try:
        with pytest.raises(sa_exc.DBAPIError) as failed:
            async with db.transaction() as conn:
                # PostgreSQL's own message (division by zero) does not echo the value.
                await conn.execute(
                    text("SELECT CAST(:address AS text), 1 / 0"), {"address": ADDRESS}
                )
    finally:
        await db.dispose()
    said = "".join(traceback.format_exception(failed.value))
    assert "division by zero" in said
    assert "Jujube Lane" not in said

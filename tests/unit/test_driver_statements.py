"""Core statements compiled for the driver (shared/db/driver.py ``fetch``): the parameters
come in the order of the SQL text, literals keep their values, and an IN list (which
SQLAlchemy would expand at each execution) is refused."""

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from shared.db.driver import _compiled, any_of, locked_by_key

lots = Table(
    "lots",
    MetaData(schema="inventory"),
    Column("lot_id", String(36), primary_key=True),
    Column("sku", String(64)),
    Column("available", Integer),
)


def test_parameters_by_name_in_the_order_of_the_text_with_the_literals_values() -> None:
    statement = select(lots.c.lot_id).where(
        lots.c.available > 5, any_of(lots.c.sku, "skus"), any_of(lots.c.lot_id)
    )
    sql, names, fixed = _compiled(statement)
    assert "ANY ($2::VARCHAR(64)[])" in sql and "ANY ($3::VARCHAR(36)[])" in sql
    assert names == ("available_1", "skus", "keys")
    assert fixed == {"available_1": 5}


def test_locked_by_key_locks_in_key_order() -> None:
    sql, names, _ = _compiled(locked_by_key(select(lots), lots.c.sku))
    assert sql.endswith("ORDER BY inventory.lots.sku FOR UPDATE")
    assert names == ("keys",)


def test_an_in_list_is_refused() -> None:
    with pytest.raises(ValueError, match="any_of"):
        _compiled(select(lots).where(lots.c.sku.in_(["a", "b"])))

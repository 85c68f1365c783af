"""Core statements compiled for the driver (shared/db/driver.py ``fetch``): the parameters
come in the order of the SQL text, literals keep their values, a look-up's keys are text
without the column's length (a cast to it would cut a longer key), and an IN list (which
SQLAlchemy would expand at each execution) is refused. Writes combined into one statement
(``combined_sql``) number their parameters on from the part before."""

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from shared.db.driver import _compiled, any_of, combined_sql, locked_by_key

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
    assert "ANY ($2::VARCHAR[])" in sql and "ANY ($3::VARCHAR[])" in sql  # not cut to length
    assert names == ("available_1", "skus", "keys")
    assert fixed == {"available_1": 5}


def test_locked_by_key_locks_in_key_order() -> None:
    sql, names, _ = _compiled(locked_by_key(select(lots), lots.c.sku))
    assert sql.endswith("ORDER BY inventory.lots.sku FOR UPDATE")
    assert names == ("keys",)


def test_an_in_list_is_refused() -> None:
    with pytest.raises(ValueError, match="any_of"):
        _compiled(select(lots).where(lots.c.sku.in_(["a", "b"])))


def test_combined_writes_number_their_parameters_on_from_the_part_before() -> None:
    parts = (
        "INSERT INTO a (x, y) SELECT x, y FROM unnest($1::int[], $2::text[]) AS u(x, y)",
        "UPDATE b AS t SET z = u.z FROM unnest($1::int[], $2::int[]) AS u(k, z) WHERE t.k = u.k",
        "INSERT INTO c (w) SELECT w FROM unnest($1::int[]) AS u(w)",
    )
    assert combined_sql(parts) == (
        "WITH caravan_write_0 AS (INSERT INTO a (x, y) SELECT x, y"
        " FROM unnest($1::int[], $2::text[]) AS u(x, y)),"
        " caravan_write_1 AS (UPDATE b AS t SET z = u.z"
        " FROM unnest($3::int[], $4::int[]) AS u(k, z) WHERE t.k = u.k)"
        " INSERT INTO c (w) SELECT w FROM unnest($5::int[]) AS u(w)"
    )
    assert combined_sql(parts[:1]) == parts[0]

"""``shared.status_gauge.in_statuses``: the statuses written into the SQL, one to an arm of an
OR (so that a partial index of each proves it), and nothing but a status name written so."""

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from services.payments.adapters.tables import payments
from shared.status_gauge import in_statuses


def test_each_status_is_a_literal_in_an_arm_of_its_own() -> None:
    where = in_statuses(payments.c.status, ["charging", "void_refused"])
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(select(payments.c.order_id).where(where).compile(dialect=dialect))
    assert sql.endswith(
        "WHERE payments.payments.status = 'charging' OR payments.payments.status = 'void_refused'"
    ), sql


@pytest.mark.parametrize("status", ["void_refused' OR true --", "", "Void refused"])
def test_anything_but_a_status_name_is_refused(status: str) -> None:
    with pytest.raises(ValueError, match="not a status"):
        in_statuses(payments.c.status, [status])

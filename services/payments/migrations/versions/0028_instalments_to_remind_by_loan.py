"""the reminder sweep's index of the instalments it may still announce, by their day and then
their loan: the loan book's overdue loans (``GET /loans?overdue=true``), the longest overdue
first and then by loan, walk it in that order as they walk ``instalments_left_unpaid``, where
by day alone a page sorted a day's every instalment fallen due and not announced yet, having
read each one's loan (the sweep reads it by day, as before)

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TO_REMIND = "paid_fen < amount_fen AND NOT reminders_done"  # tables.TO_REMIND, as of now


def _index(*columns: str) -> None:
    op.drop_index("instalments_to_remind", table_name="instalments", schema="payments")
    op.create_index(
        "instalments_to_remind",
        "instalments",
        list(columns),
        schema="payments",
        postgresql_where=sa.text(TO_REMIND),
    )


def upgrade() -> None:
    _index("due", "loan_id")


def downgrade() -> None:
    _index("due")

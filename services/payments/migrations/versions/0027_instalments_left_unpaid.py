"""an index of the instalments left unpaid that no reminder is announced of any more (announced
overdue, or of a voided loan), by their day: the loan book's overdue loans (``GET
/loans?overdue=true``, ``caravan payments loans --overdue``), read from them and from
``instalments_to_remind``, walked every loan, newest first, to the oldest overdue one

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 01:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"
LEFT_UNPAID = sa.text("paid_fen < amount_fen AND reminders_done")  # tables.LEFT_UNPAID, as of now


def upgrade() -> None:
    op.create_index(
        "instalments_left_unpaid",
        "instalments",
        ["due", "loan_id"],
        schema=S,
        postgresql_where=LEFT_UNPAID,
    )


def downgrade() -> None:
    op.drop_index("instalments_left_unpaid", table_name="instalments", schema=S)

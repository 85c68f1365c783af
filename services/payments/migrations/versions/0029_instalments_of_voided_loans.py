"""the instalments of a voided loan are marked so (``voided``), in the void's transaction, and
left out of the index of those left unpaid (``instalments_left_unpaid``, 0027): the loan
book's overdue loans read every voided loan's instalment past its day there, to find the loan
voided and leave it; those of the loans voided before are marked here

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"
LEFT_UNPAID = "paid_fen < amount_fen AND reminders_done"  # as of 0027
OWED = f"{LEFT_UNPAID} AND NOT voided"  # tables.LEFT_UNPAID, as of now


def upgrade() -> None:
    op.add_column(
        "instalments",
        sa.Column("voided", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=S,
    )
    # As void_loan marks them from now on.
    op.execute(
        "UPDATE payments.instalments i SET voided = true FROM payments.loans l"
        " WHERE l.loan_id = i.loan_id AND l.status = 'voided'"
    )
    _left_unpaid(OWED)


def downgrade() -> None:
    """Drops the mark without refusing: it is derived from what is kept, its loan's status
    (``loans.status``), which the upgrade marks them from again; the older version keeps
    them out of the reminders by ``reminders_done``, which a void sets still."""
    _left_unpaid(LEFT_UNPAID)
    op.drop_column("instalments", "voided", schema=S)


def _left_unpaid(where: str) -> None:
    """The index of the instalments left unpaid, by their day and loan, made again for
    ``where``."""
    op.drop_index("instalments_left_unpaid", table_name="instalments", schema=S)
    op.create_index(
        "instalments_left_unpaid",
        "instalments",
        ["due", "loan_id"],
        schema=S,
        postgresql_where=sa.text(where),
    )

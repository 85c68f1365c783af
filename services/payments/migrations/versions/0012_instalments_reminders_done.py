"""the reminder sweep's index holds only the instalments it may still announce: those of
voided loans and those announced overdue are marked done and left out

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"
TO_REMIND = "paid_fen < amount_fen AND NOT reminders_done"  # tables.TO_REMIND, as of now


def upgrade() -> None:
    op.add_column(
        "instalments",
        sa.Column("reminders_done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema=S,
    )
    # As void_loan and the sweep mark them from now on.
    op.execute(
        "UPDATE payments.instalments i SET reminders_done = true"
        " WHERE EXISTS (SELECT 1 FROM payments.loans l"
        "   WHERE l.loan_id = i.loan_id AND l.status = 'voided')"
        " OR EXISTS (SELECT 1 FROM payments.instalment_reminders r"
        "   WHERE r.loan_id = i.loan_id AND r.number = i.number AND r.stage = 'overdue')"
    )
    _sweep_index("instalments_unpaid_due", "instalments_to_remind", TO_REMIND)


def downgrade() -> None:
    """Drops the mark without refusing: it is derived from what is kept, an instalment of a
    voided loan (loans.status) or announced overdue (instalment_reminders), and the upgrade
    marks them so again."""
    _sweep_index("instalments_to_remind", "instalments_unpaid_due", "paid_fen < amount_fen")
    op.drop_column("instalments", "reminders_done", schema=S)


def _sweep_index(old: str, new: str, where: str) -> None:
    """The reminder sweep's index by due date, made again as ``new`` for ``where``."""
    op.drop_index(old, table_name="instalments", schema=S)
    op.create_index(new, "instalments", ["due"], schema=S, postgresql_where=sa.text(where))

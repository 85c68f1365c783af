"""recipients.done_at: when nothing could text an order's buyer any more (its order ended
without a loan, or its loan was repaid or voided), so that the row, their number with it,
is deleted ``notifications_recipient_retention_days`` later; rows written before stay until
such an event comes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 12:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "recipients",
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        schema="notifications",
    )


def downgrade() -> None:
    """Refused while a recipient is finished with: nothing else keeps when (its order's end,
    or its loan's), and upgraded again such a row would never be deleted, its buyer's number
    kept for ever, as one written before this migration (no such event comes again). The
    older version keeps every recipient for ever either way."""
    refuse_losing(
        "notifications.recipients",
        "done_at IS NOT NULL",
        "when nothing could text each order's buyer any more, from which their number is"
        " deleted (upgraded again, it would be kept for ever)",
        "UPDATE notifications.recipients SET done_at = NULL WHERE done_at IS NOT NULL",
    )
    op.drop_column("recipients", "done_at", schema="notifications")

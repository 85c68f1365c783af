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
    op.drop_column("recipients", "done_at", schema="notifications")

"""an index of the payments refunded by hand, owed (``void_refused``) or made (``refunded``):
the gauge the alert watches counts them at every sample, and operators list them, without a
scan of every payment

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.create_index(
        "payments_refunds_by_hand",
        "payments",
        ["status", "updated_at", "order_id"],
        schema=S,
        postgresql_where=sa.text("status IN ('void_refused', 'refunded')"),
    )


def downgrade() -> None:
    op.drop_index("payments_refunds_by_hand", table_name="payments", schema=S)

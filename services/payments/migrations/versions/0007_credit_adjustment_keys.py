"""credit limit adjustments by idempotency key: a retried adjustment is applied once

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credit_adjustments",
        sa.Column("buyer_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("delta_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("buyer_id", "idempotency_key"),
        schema="payments",
    )


def downgrade() -> None:
    """Refused while an adjustment was made with an idempotency key: upgraded again, a retry
    of a key used before would be applied again, the buyer's limit moved twice. Each is in
    the audit trail too (auth.audit, action credit.adjust: when, and its buyer, delta and
    key); the older version applies every call, key or not."""
    refuse_losing(
        "payments.credit_adjustments",
        None,
        "the credit adjustments made with an idempotency key, by which a retry is applied once"
        " (the audit trail's credit.adjust entries say each too)",
        "DELETE FROM payments.credit_adjustments",
    )
    op.drop_table("credit_adjustments", schema="payments")

"""a payment an operator voided because the orders service never had its order (``POST
/orders/{id}/payment/void``): when, by whom and why, so that the same void asked again is
answered as the first, and ``GET /orders/{id}/payment`` says why the payment is voided

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("unplaced_at", sa.DateTime(timezone=True), nullable=True), schema=S
    )
    op.add_column("payments", sa.Column("unplaced_by", sa.String(128), nullable=True), schema=S)
    op.add_column("payments", sa.Column("unplaced_reason", sa.String(256), nullable=True), schema=S)


def downgrade() -> None:
    """Loses nothing the older version reads: each void is the audit trail's too (its entry,
    ``payment.void_unplaced``); the payment stays as the void left it."""
    op.drop_column("payments", "unplaced_reason", schema=S)
    op.drop_column("payments", "unplaced_by", schema=S)
    op.drop_column("payments", "unplaced_at", schema=S)

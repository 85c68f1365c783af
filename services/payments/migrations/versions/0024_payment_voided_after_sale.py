"""a payment an operator voided after its order's sale (``caravan payments void-sold``, ``POST
/orders/{id}/payment/void`` with ``"orders_answered": "confirmed"``): when, by whom and why,
so that the same void asked again is answered as the first, and ``GET /orders/{id}/payment``
says why the payment of a confirmed order is voided

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"
WHEN, BY, WHY = "voided_after_sale_at", "voided_after_sale_by", "voided_after_sale_reason"


def upgrade() -> None:
    op.add_column("payments", sa.Column(WHEN, sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("payments", sa.Column(BY, sa.String(128), nullable=True), schema=S)
    op.add_column("payments", sa.Column(WHY, sa.String(256), nullable=True), schema=S)


def downgrade() -> None:
    """Loses nothing the older version reads: each void is the audit trail's too (its entry,
    ``payment.void_after_sale``); the payment stays as the void left it."""
    op.drop_column("payments", WHY, schema=S)
    op.drop_column("payments", BY, schema=S)
    op.drop_column("payments", WHEN, schema=S)

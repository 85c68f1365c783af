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

from shared.db.migrate import refuse_losing

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
    """Refused while a payment was voided after its order's sale: this version, upgraded to
    again, would read each such order as confirmed without a payment (``caravan check``'s
    ``confirmed_has_payment``), and answer ``void-sold`` asked again with a refusal, not as
    voided before. Each void is the audit trail's too (``payment.void_after_sale``)."""
    refuse_losing(
        f"{S}.payments",
        f"{WHEN} IS NOT NULL",
        "which confirmed orders' payments an operator voided after the sale, by whom and why"
        " (the audit trail's payment.void_after_sale entries say it too)",
        f"UPDATE {S}.payments SET {WHEN} = NULL, {BY} = NULL, {WHY} = NULL"
        f" WHERE {WHEN} IS NOT NULL",
    )
    op.drop_column("payments", WHY, schema=S)
    op.drop_column("payments", BY, schema=S)
    op.drop_column("payments", WHEN, schema=S)

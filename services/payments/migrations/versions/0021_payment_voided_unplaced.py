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

from shared.db.migrate import refuse_losing

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
    """Refused while a payment was voided by an operator for an order the orders service never
    had: this version, upgraded to again, would answer ``void-unplaced`` asked again with a
    refusal (nothing to void), not as voided before, and neither ``GET
    /orders/{id}/payment`` nor ``caravan payments list`` would say why it is voided (as
    payments 0024 refuses for a void after the sale). Each void is the audit trail's too
    (``payment.void_unplaced``)."""
    refuse_losing(
        f"{S}.payments",
        "unplaced_at IS NOT NULL",
        "which payments an operator voided because the orders service never had their order,"
        " by whom and why (the audit trail's payment.void_unplaced entries say it too)",
        f"UPDATE {S}.payments SET unplaced_at = NULL, unplaced_by = NULL, unplaced_reason = NULL"
        " WHERE unplaced_at IS NOT NULL",
    )
    op.drop_column("payments", "unplaced_reason", schema=S)
    op.drop_column("payments", "unplaced_by", schema=S)
    op.drop_column("payments", "unplaced_at", schema=S)

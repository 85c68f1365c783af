"""an order placed over HTTP keeps the name of the token that placed it, so that a token bound
to its own orders (``caravan tokens issue --own-orders``) reaches them and no other client's

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("placed_by", sa.String(length=64), nullable=True), schema="orders"
    )


def downgrade() -> None:
    """Refused while HTTP orders name the token that placed them: upgraded again, a bound
    token would no longer reach its own orders, nor be answered its order for its own key."""
    refuse_losing(
        "orders.orders",
        "placed_by IS NOT NULL",
        "which token placed each HTTP order",
        "UPDATE orders.orders SET placed_by = NULL WHERE placed_by IS NOT NULL",
    )
    op.drop_column("orders", "placed_by", schema="orders")

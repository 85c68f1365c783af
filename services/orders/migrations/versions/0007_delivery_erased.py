"""when an order's delivery address was erased, its retention past
(``orders_delivery_retention_days``), so that the API can say so rather than show an order
that never had one

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 12:00:00
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
    op.add_column(
        "orders",
        sa.Column("delivery_erased_at", sa.DateTime(timezone=True), nullable=True),
        schema="orders",
    )


def downgrade() -> None:
    """Refused while an order says its address was erased: nothing else keeps when, and
    upgraded again the API would show such an order as one placed without an address (the
    older version keeps addresses for ever, and erases none)."""
    refuse_losing(
        "orders.orders",
        "delivery_erased_at IS NOT NULL",
        "when each order's delivery address was erased (upgraded again, the API would show it"
        " as never given)",
        "UPDATE orders.orders SET delivery_erased_at = NULL WHERE delivery_erased_at IS NOT NULL",
    )
    op.drop_column("orders", "delivery_erased_at", schema="orders")

"""a cancelled order keeps the products it was cancelled for: the SKUs ``stock.rejected``
named (``unknown_sku``, ``out_of_stock``, ``out_of_season``), which orders read without
keeping, so neither ``GET /orders/{id}``, nor ``order.cancelled``, nor the buyer's text said
which of an order's products was at fault

One nullable column, NULL on every other order: added without rewriting the table. An order
cancelled before has none (its ``stock.rejected`` is not kept to read them back from).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.migrate import refuse_losing

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("skus", JSONB, nullable=True), schema="orders")


def downgrade() -> None:
    """Refused while cancelled orders name the products they were cancelled for: an operator
    and a storefront would no longer see them (nothing else keeps them)."""
    refuse_losing(
        "orders.orders",
        "skus IS NOT NULL",
        "which products each order was cancelled for",
        "UPDATE orders.orders SET skus = NULL WHERE skus IS NOT NULL",
    )
    op.drop_column("orders", "skus", schema="orders")

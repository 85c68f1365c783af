"""an operator's orders of one product or one seller (``caravan orders list --sku``,
``--seller``; ``GET /orders?sku=``, ``?seller=``): a GIN index of the orders' lines
(``jsonb_path_ops``: ``lines @> '[{"sku": ...}]'``), and ``order_sellers``, the sellers whose
goods each order holds, as its ``stock.reserved`` named them (orders kept no seller before)

The lines never change after an order is placed, so the index costs each order's insert an
entry and leaves its updates HOT (0014). The sellers are a table of their own, written with
the reservation, for the same reason: a column of the order's row, indexed, would have cost
that update its HOT. Orders reserved before this migration have no sellers kept (their
``stock.reserved`` is not kept to read them from): a seller's list starts with it.

Built without CONCURRENTLY, as every migration here is (docs/running.md, Upgrading).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "orders_lines",
        "orders",
        ["lines"],
        schema="orders",
        postgresql_using="gin",
        postgresql_ops={"lines": "jsonb_path_ops"},
    )
    op.create_table(
        "order_sellers",
        sa.Column("seller_id", sa.String(64), primary_key=True),
        sa.Column(
            "order_id", sa.String(36), sa.ForeignKey("orders.orders.order_id"), primary_key=True
        ),
        schema="orders",
    )


def downgrade() -> None:
    """Refused while orders name their sellers: upgraded again, a seller's list would miss
    them (nothing else keeps them)."""
    refuse_losing(
        "orders.order_sellers",
        None,
        "which sellers' goods each order holds",
        "DELETE FROM orders.order_sellers",
    )
    op.drop_table("order_sellers", schema="orders")
    op.drop_index("orders_lines", table_name="orders", schema="orders")

"""an order keeps where to send its goods (the request's delivery), for the API to answer

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 17:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.migrate import refuse_losing

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("delivery", JSONB, nullable=True), schema="orders")


def downgrade() -> None:
    refuse_losing(
        "orders.orders",
        # an address (an order placed without one holds JSON null; one erased, NULL)
        "jsonb_typeof(delivery) = 'object'",
        "where to send the goods of orders (their delivery addresses)",
        "UPDATE orders.orders SET delivery = NULL",
    )
    op.drop_column("orders", "delivery", schema="orders")

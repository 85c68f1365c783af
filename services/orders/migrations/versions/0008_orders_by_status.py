"""every buyer's orders of one status are found newest first by an index on status and the
time placed: an operator's list (GET /orders without buyer_id, for the scope ops) scanned
every order of every season

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 08:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "orders_status_placed", "orders", ["status", "placed_at", "order_id"], schema="orders"
    )


def downgrade() -> None:
    op.drop_index("orders_status_placed", table_name="orders", schema="orders")

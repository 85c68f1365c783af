"""an index of the orders by order_ref: an operator's list of the orders of one order_ref
(``caravan orders list --ref``, ``GET /orders?order_ref=`` without source, for the scope ops)
read the whole of the idempotency key's index, whose order_ref is its second column: 0.7 s
and 11,487 blocks read at a season's million orders

Built without CONCURRENTLY, as every migration here is (each schema migrates in one
transaction, under an advisory lock, on a stopped system: docs/running.md, Upgrading): at a
million orders it takes a few seconds, during which the table's writers wait.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 08:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("orders_ref", "orders", ["order_ref"], schema="orders")


def downgrade() -> None:
    op.drop_index("orders_ref", table_name="orders", schema="orders")

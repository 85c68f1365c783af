"""an index of the orders by source, status and time placed: an operator's orders of one
source (``caravan orders list --source``, ``GET /orders?source=``) were read along
``orders_status_placed``, newest first, each order's row visited for its source until a
page of that source's was found: a source whose orders are older than many of another's
(a shop that stopped a month ago, 1.2 % of the orders) took 0.7-1.4 s and 181,000 blocks at
182,000 orders, 0.15-0.23 ms with this index

It costs every order's insert and each change of its status an entry more (the status is
indexed already, so such a change updates every index of the row), about 130 bytes an order
(26 MB at 200,000 orders); inserting and confirming 20,000 orders took as long with it as
without, within the machine's noise (1.7-2.5 s and 1.5-1.9 s each, either way).

Built without CONCURRENTLY, as every migration here is (each schema migrates in one
transaction, under an advisory lock, on a stopped system: docs/running.md, Upgrading): 1.1 s
at 182,000 orders, a few seconds at a million, during which the table's writers wait.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 10:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "orders_source_status_placed",
        "orders",
        ["source", "status", "placed_at", "order_id"],
        schema="orders",
    )


def downgrade() -> None:
    op.drop_index("orders_source_status_placed", table_name="orders", schema="orders")

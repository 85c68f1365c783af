"""a SKU's lots are found by sku and best_before: an order reads only those not expired on
its day (the index on sku alone, which this one serves too, is dropped)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 02:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "inventory"


def upgrade() -> None:
    op.create_index("ix_inventory_lots_sku_best_before", "lots", ["sku", "best_before"], schema=S)
    op.drop_index("ix_inventory_lots_sku", table_name="lots", schema=S)


def downgrade() -> None:
    op.create_index("ix_inventory_lots_sku", "lots", ["sku"], schema=S)
    op.drop_index("ix_inventory_lots_sku_best_before", table_name="lots", schema=S)

"""an index of the products by seller and SKU: a seller's stock (``GET /stock?seller=``,
``caravan inventory stock --seller``) read its products by a scan of every product, each
checked for its seller: on the county's seed (2,130 products of 426 sellers) 5.2 ms for a
seller's first page, the scan 4.8 ms of it and 2,125 rows thrown away; a province's 50,000
products would be read whole for each seller's five. Through the index, the seller's own
products, in SKU order, as the page is read (``sku`` after the seller: no sort, and the
cursor's ``sku >`` a range of it).

Products are written by a seed alone, never by an order: the index costs nothing on the
saga's path.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_inventory_products_seller_sku", "products", ["seller_id", "sku"], schema="inventory"
    )


def downgrade() -> None:
    op.drop_index("ix_inventory_products_seller_sku", table_name="products", schema="inventory")

"""inventory schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 01:03:13.080298
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db.messaging_migration import create_messaging_tables, drop_messaging_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_messaging_tables("inventory")
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("order_id"),
        schema="inventory",
    )
    op.create_table(
        "sellers",
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("county", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("seller_id"),
        schema="inventory",
    )
    op.create_table(
        "products",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("unit_price_fen", sa.BigInteger(), nullable=False),
        sa.Column("name", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["seller_id"],
            ["inventory.sellers.seller_id"],
        ),
        sa.PrimaryKeyConstraint("sku"),
        schema="inventory",
    )
    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sold", sa.Integer(), server_default="0", nullable=False),
        sa.Column("spoiled", sa.Integer(), server_default="0", nullable=False),
        sa.Column("available_from", sa.Date(), nullable=False),
        sa.Column("best_before", sa.Date(), nullable=False),
        sa.CheckConstraint(
            "available >= 0 AND reserved >= 0 AND sold >= 0 AND spoiled >= 0",
            name="lots_nonnegative",
        ),
        sa.CheckConstraint(
            "received = available + reserved + sold + spoiled", name="lots_conserved"
        ),
        sa.ForeignKeyConstraint(
            ["sku"],
            ["inventory.products.sku"],
        ),
        sa.PrimaryKeyConstraint("lot_id"),
        schema="inventory",
    )
    op.create_index(
        op.f("ix_inventory_lots_sku"), "lots", ["sku"], unique=False, schema="inventory"
    )
    op.create_table(
        "reservation_lines",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lot_id"],
            ["inventory.lots.lot_id"],
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["inventory.reservations.order_id"],
        ),
        sa.PrimaryKeyConstraint("order_id", "lot_id"),
        schema="inventory",
    )


def downgrade() -> None:
    op.drop_table("reservation_lines", schema="inventory")
    op.drop_index(op.f("ix_inventory_lots_sku"), table_name="lots", schema="inventory")
    op.drop_table("lots", schema="inventory")
    op.drop_table("products", schema="inventory")
    op.drop_table("sellers", schema="inventory")
    op.drop_table("reservations", schema="inventory")
    drop_messaging_tables("inventory")

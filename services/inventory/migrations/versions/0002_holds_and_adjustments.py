"""hold expiry notifications and lot adjustments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "reservations",
        sa.Column("expiry_notified_at", sa.DateTime(timezone=True), nullable=True),
        schema="inventory",
    )
    op.create_index(
        "ix_inventory_reservations_held",
        "reservations",
        ["created_at"],
        unique=False,
        schema="inventory",
        postgresql_where=sa.text("status = 'reserved' AND expiry_notified_at IS NULL"),
    )
    op.create_table(
        "lot_adjustments",
        sa.Column("adjustment_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("delta <> 0"),
        sa.ForeignKeyConstraint(["lot_id"], ["inventory.lots.lot_id"]),
        sa.PrimaryKeyConstraint("adjustment_id"),
        schema="inventory",
    )
    op.create_index(
        op.f("ix_inventory_lot_adjustments_lot_id"),
        "lot_adjustments",
        ["lot_id"],
        unique=False,
        schema="inventory",
    )


def downgrade() -> None:
    """Refused while a lot was adjusted: why its count changed (counted again, written off)
    is kept nowhere else (the lot keeps only the count). Holds' expiry mark is dropped."""
    refuse_losing(
        "inventory.lot_adjustments",
        None,
        "why lots' counts were changed (adjustments: counted again, written off)",
        "DELETE FROM inventory.lot_adjustments",
    )
    op.drop_index(
        op.f("ix_inventory_lot_adjustments_lot_id"),
        table_name="lot_adjustments",
        schema="inventory",
    )
    op.drop_table("lot_adjustments", schema="inventory")
    op.drop_index("ix_inventory_reservations_held", table_name="reservations", schema="inventory")
    op.drop_column("reservations", "expiry_notified_at", schema="inventory")

"""who made each lot adjustment, and lot corrections (a lot's SKU or dates mistyped when it
was received, set right), so that a lot's history lists both

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.migrate import refuse_losing

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null on the adjustments made before: who made those is in auth.audit (lot.adjust).
    op.add_column(
        "lot_adjustments",
        sa.Column("actor", sa.String(length=128), nullable=True),
        schema="inventory",
    )
    op.create_table(
        "lot_corrections",
        sa.Column("correction_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("before", JSONB(), nullable=False),
        sa.Column("after", JSONB(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["inventory.lots.lot_id"]),
        sa.PrimaryKeyConstraint("correction_id"),
        schema="inventory",
    )
    op.create_index(
        op.f("ix_inventory_lot_corrections_lot_id"),
        "lot_corrections",
        ["lot_id"],
        unique=False,
        schema="inventory",
    )


def downgrade() -> None:
    refuse_losing(
        "inventory.lot_corrections",
        None,
        "the record of lots corrected (who set right which terms, when and why)",
        "DELETE FROM inventory.lot_corrections",
    )
    op.drop_index(
        op.f("ix_inventory_lot_corrections_lot_id"),
        table_name="lot_corrections",
        schema="inventory",
    )
    op.drop_table("lot_corrections", schema="inventory")
    op.drop_column("lot_adjustments", "actor", schema="inventory")

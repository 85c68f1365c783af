"""a lot's selling stopped and restarted: a lot stopped selling takes no new holds (those it
has drain), so that a lot selling at peak can be corrected; and the record of each stop and
restart, for the lot's history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "lots",
        sa.Column("on_sale", sa.Boolean(), server_default=sa.true(), nullable=False),
        schema="inventory",
    )
    op.create_table(
        "lot_selling",
        sa.Column("change_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("on_sale", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["inventory.lots.lot_id"]),
        sa.PrimaryKeyConstraint("change_id"),
        schema="inventory",
    )
    op.create_index(
        op.f("ix_inventory_lot_selling_lot_id"),
        "lot_selling",
        ["lot_id"],
        unique=False,
        schema="inventory",
    )


def downgrade() -> None:
    refuse_losing(
        "inventory.lots",
        "NOT on_sale",
        "which lots are stopped selling (they would sell again)",
        "UPDATE inventory.lots SET on_sale = true WHERE NOT on_sale",
    )
    refuse_losing(
        "inventory.lot_selling",
        None,
        "the record of lots stopped and restarted selling (who, when and why)",
        "DELETE FROM inventory.lot_selling",
    )
    op.drop_index(
        op.f("ix_inventory_lot_selling_lot_id"), table_name="lot_selling", schema="inventory"
    )
    op.drop_table("lot_selling", schema="inventory")
    op.drop_column("lots", "on_sale", schema="inventory")

"""write-offs of spoiled stock: an adjustment may say its units spoiled (from available to
spoiled, received unchanged), where every adjustment changed what the lot received

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "lot_adjustments",
        sa.Column("spoiled", sa.Boolean(), server_default=sa.false(), nullable=False),
        schema="inventory",
    )


def downgrade() -> None:
    refuse_losing(
        "inventory.lot_adjustments",
        "spoiled",
        "which adjustments wrote off spoiled units (received is left as it was by them)",
        "UPDATE inventory.lot_adjustments SET spoiled = false WHERE spoiled",
    )
    op.drop_column("lot_adjustments", "spoiled", schema="inventory")

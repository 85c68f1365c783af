"""what of each platform order was placed (its items, digests of its delivery and buyer), so
that a later change of it on the platform is told rather than answered as a duplicate

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Orders placed before have none: a later change of one is not told, as before."""
    op.add_column("platform_orders", sa.Column("placed", JSONB, nullable=True), schema="platform")


def downgrade() -> None:
    """Drops what was placed without refusing: the older version answers a change of an order
    placed as a duplicate, whatever it is."""
    op.drop_column("platform_orders", "placed", schema="platform")

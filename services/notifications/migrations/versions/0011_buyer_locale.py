"""buyers: the language a seed file gives each buyer (``caravan seed``), in which their texts
go where an order leaves ``buyer.locale`` out; a seed's buyers' locales were kept nowhere, and
such a buyer was texted in zh-CN

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "buyers",
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("buyer_id"),
        schema="notifications",
    )


def downgrade() -> None:
    # Dropped without refusing: the next seed brings them (the older version reads none).
    op.drop_table("buyers", schema="notifications")

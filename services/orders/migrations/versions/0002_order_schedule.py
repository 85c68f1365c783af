"""the instalment schedule of a microloan order, told to the buyer on confirmation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "orders",
        sa.Column("schedule", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="orders",
    )


def downgrade() -> None:
    """Drops each order's copy of its loan's schedule without refusing: derived, from its
    payment.authorized; payments keeps the loan's instalments, and the older version reads
    none."""
    op.drop_column("orders", "schedule", schema="orders")

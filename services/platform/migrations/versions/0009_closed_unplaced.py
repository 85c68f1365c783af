"""the platform orders a push found cancelled before they were placed, so that
an older read of one paid, decided later, does not place it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Empty at first: orders closed before this are not known as such (a late read of one
    paid places it, as before)."""
    op.create_table(
        "closed_unplaced",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("platform_order_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("app", "platform_order_id"),
        schema="platform",
    )


def downgrade() -> None:
    """The older version places an order whose paid read is decided after a cancelled one
    (what this guards against), nothing worse: its ``paid_after_cancelled`` problems stay
    listed until resolved."""
    op.drop_table("closed_unplaced", schema="platform")

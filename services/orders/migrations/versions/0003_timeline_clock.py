"""a timeline step's time is when it was written, not when its transaction began

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "timeline", "time", server_default=sa.text("clock_timestamp()"), schema="orders"
    )


def downgrade() -> None:
    op.alter_column("timeline", "time", server_default=sa.text("now()"), schema="orders")

"""when each text was first allowed to go: the give-up clock of its retries counts from it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: no rewrite of the table (rows queued before it count from
    # created_at, as they did).
    op.add_column(
        "sms",
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        schema="notifications",
    )


def downgrade() -> None:
    op.drop_column("sms", "not_before", schema="notifications")

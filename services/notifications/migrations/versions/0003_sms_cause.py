"""the id of the event that asked for each text

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sms", sa.Column("caused_by", sa.String(256), nullable=True), schema="notifications"
    )


def downgrade() -> None:
    """Drops the id of the event that asked for each text without refusing: it is only
    diagnostic (the cause named on the sms.* events about it, which nothing acts on), and the
    older version names none. The text itself, its order and purpose are kept."""
    op.drop_column("sms", "caused_by", schema="notifications")

"""sms.failed_at: when a text failed (the gateway refused it, its tries were given up, a
receipt said it was not delivered, its number was not one to text), which ``GET /sms`` and
``caravan texts`` say beside why; no column kept it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 01:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null: PostgreSQL rewrites no row. A text failed before has none (nothing said when).
    op.add_column(
        "sms",
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        schema="notifications",
    )


def downgrade() -> None:
    """Drops when each text failed without refusing: the older version neither keeps nor reads
    it, and a failed text keeps its status and why (``last_error``). Upgraded again, the texts
    failed before say no time, as those failed before this migration."""
    op.drop_column("sms", "failed_at", schema="notifications")

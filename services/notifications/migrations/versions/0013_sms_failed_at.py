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

from shared.db.migrate import refuse_losing

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
    """Refused while a text says when it failed: nothing else keeps it (a failed text keeps
    its status and why, ``last_error``, not when), and upgraded again ``GET /sms`` and
    ``caravan texts`` would say no time of it, as of one failed before this migration."""
    refuse_losing(
        "notifications.sms",
        "failed_at IS NOT NULL",
        "when each failed text failed (refused, given up, not delivered, a number not to text)",
        "UPDATE notifications.sms SET failed_at = NULL WHERE failed_at IS NOT NULL",
    )
    op.drop_column("sms", "failed_at", schema="notifications")

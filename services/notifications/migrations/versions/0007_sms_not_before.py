"""when each text was first allowed to go: the give-up clock of its retries counts from it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

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
    """Refused while a text still to be sent was held back (quiet hours, or a retry put off
    through them): the older version would count its give-up clock from when it was queued,
    the hours held included, and give it up once its tries are spent, without the grace its
    retries have from when it may go. That of a text queued and due at once (a minute allows
    for the handler's clock and the transaction's), or of one sent or given up, is only a
    record of when it was allowed to go: dropped."""
    refuse_losing(
        "notifications.sms",
        "status IN ('pending', 'sending') AND not_before > created_at + interval '1 minute'",
        "when each text held back was first allowed to go, from which its retries are given up"
        " (or wait until they are sent)",
        "UPDATE notifications.sms SET not_before = NULL WHERE status IN ('pending', 'sending')"
        " AND not_before > created_at + interval '1 minute'",
    )
    op.drop_column("sms", "not_before", schema="notifications")

"""sms.lapses: how many of a text's claims lapsed unrecorded, counted apart from its attempts
(which also count the gateway's failures recorded as retries), so that a text is given up
for its lapsed claims only

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL rewrites no row. A row sending now counts its lapses
    # from here.
    op.add_column(
        "sms",
        sa.Column("lapses", sa.Integer(), nullable=False, server_default="0"),
        schema="notifications",
    )


def downgrade() -> None:
    """Drops how many of each text's claims lapsed unrecorded without refusing: the older
    version gives a text up by its attempts, which count its lapses too, and a text given up
    for its lapses says how many in its last_error. Upgraded again, a text still sending counts
    its lapses from there, as the upgrade says."""
    op.drop_column("sms", "lapses", schema="notifications")

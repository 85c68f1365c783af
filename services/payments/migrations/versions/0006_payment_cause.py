"""the id of the event that asked for a prepaid payment's gateway call

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("caused_by", sa.String(256), nullable=True), schema="payments"
    )


def downgrade() -> None:
    """Drops the id of the event that asked for each gateway call without refusing: it is only
    diagnostic (the cause named on the event of the call's outcome, which nothing acts on),
    and the older version names none."""
    op.drop_column("payments", "caused_by", schema="payments")

"""an index of the payments of the statuses no other index holds (pending, authorized,
declined, voided, cancelled) by status and the time they last changed: an operator's list of
one of them (``caravan payments list --status authorized``, ``GET /payments?status=``) read
every payment ever made and sorted them

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.create_index(
        "payments_status_changed",
        "payments",
        ["status", "updated_at", "order_id"],
        schema=S,
        postgresql_where=sa.text(
            "status IN ('pending', 'authorized', 'declined', 'voided', 'cancelled')"
        ),
    )


def downgrade() -> None:
    op.drop_index("payments_status_changed", table_name="payments", schema=S)

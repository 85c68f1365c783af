"""indexes for the loops that look for due work: gateway calls and unpaid instalments

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "payments_gateway_due",
        "payments",
        ["next_attempt_at"],
        schema="payments",
        postgresql_where=sa.text("status IN ('charging', 'voiding')"),
    )
    op.create_index(
        "instalments_unpaid_due",
        "instalments",
        ["due"],
        schema="payments",
        postgresql_where=sa.text("paid_fen < amount_fen"),
    )


def downgrade() -> None:
    op.drop_index("instalments_unpaid_due", table_name="instalments", schema="payments")
    op.drop_index("payments_gateway_due", table_name="payments", schema="payments")

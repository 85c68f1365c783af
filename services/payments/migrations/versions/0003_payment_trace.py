"""the trace context of the event that asked for a prepaid charge

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 03:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("trace_headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="payments",
    )


def downgrade() -> None:
    """Drops each charge's trace context without refusing: it is only diagnostic, and the older
    version reads none. A gateway call asked for before and made after starts a trace of its
    own rather than continue the order's."""
    op.drop_column("payments", "trace_headers", schema="payments")

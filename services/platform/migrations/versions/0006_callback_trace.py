"""the trace context of the terminal event each status callback tells, so that the call to
the platform continues the order's trace

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("callbacks", sa.Column("trace_headers", JSONB, nullable=True), schema="platform")


def downgrade() -> None:
    """Drops each callback's trace context without refusing: it is only diagnostic, and the older
    version reads none. A callback queued before and made after starts a trace of its own
    rather than continue the order's."""
    op.drop_column("callbacks", "trace_headers", schema="platform")

"""the trace context of the event that asked for each text

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sms", sa.Column("trace_headers", JSONB, nullable=True), schema="notifications")


def downgrade() -> None:
    """Drops each text's trace context without refusing: it is only diagnostic, and the older
    version reads none. A text queued before and sent after has the gateway's call and the
    sms.* events about it start a trace of their own rather than continue the order's."""
    op.drop_column("sms", "trace_headers", schema="notifications")

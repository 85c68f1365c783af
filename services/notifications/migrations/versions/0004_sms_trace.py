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
    op.drop_column("sms", "trace_headers", schema="notifications")

"""the trace context of the request that placed each order, so that the expiry sweep's
cancellation continues the order's trace

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
    op.add_column("orders", sa.Column("trace_headers", JSONB, nullable=True), schema="orders")


def downgrade() -> None:
    """Drops each order's trace context without refusing: it is only diagnostic, and the older
    version reads none. An order placed before and expired after has its cancellation start a
    trace of its own rather than continue the order's."""
    op.drop_column("orders", "trace_headers", schema="orders")

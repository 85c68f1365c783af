"""the trace context of the order.placed that made each hold, so that the hold-expiry sweep's
stock.expired continues the order's trace

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
    op.add_column(
        "reservations", sa.Column("trace_headers", JSONB, nullable=True), schema="inventory"
    )


def downgrade() -> None:
    """Drops each hold's trace context without refusing: it is only diagnostic, and the older
    version reads none. A hold made before and expired after has its stock.expired start a
    trace of its own rather than continue the order's."""
    op.drop_column("reservations", "trace_headers", schema="inventory")

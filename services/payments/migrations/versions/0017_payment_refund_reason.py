"""why a refund made by hand was recorded, beside its reference: the same reference given
again with another reason is refused rather than answered as the refund recorded

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column("payments", sa.Column("refund_reason", sa.String(256), nullable=True), schema=S)


def downgrade() -> None:
    """Loses nothing: each reason is the audit trail's too (the refund's entry, its
    ``detail``), which the older version reads as before."""
    op.drop_column("payments", "refund_reason", schema=S)

"""who recorded a refund made by hand (``refunded_by``, the token's name), so that the same
refund recorded again says when and by whom it was

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column("payments", sa.Column("refunded_by", sa.String(128), nullable=True), schema=S)


def downgrade() -> None:
    """Loses nothing the older version reads: who recorded each refund is the audit trail's
    too (its entry, ``payment.refund``)."""
    op.drop_column("payments", "refunded_by", schema=S)

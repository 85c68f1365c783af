"""a repayment keeps its allocation to instalments: a retry of its key answers it whole

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.migrate import refuse_losing

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("repayments", sa.Column("allocations", JSONB, nullable=True), schema="payments")


def downgrade() -> None:
    """Refused while repayments keep their allocation, which a retry of the key answers: how
    each was split over the loan's instalments is kept nowhere else as such (the instalments
    hold the sums paid; the audit trail, the loan's schedule before and after)."""
    refuse_losing(
        "payments.repayments",
        "allocations IS NOT NULL",
        "how each repayment was allocated to the loan's instalments",
        "UPDATE payments.repayments SET allocations = NULL WHERE allocations IS NOT NULL",
    )
    op.drop_column("repayments", "allocations", schema="payments")

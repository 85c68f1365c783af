"""why a refund made by hand was recorded, beside its reference: the same reference given
again with another reason is refused rather than answered as the refund recorded

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column("payments", sa.Column("refund_reason", sa.String(256), nullable=True), schema=S)


def downgrade() -> None:
    """Refused while a refund recorded by hand keeps its reason: upgraded again, the same
    reference given with another reason would be answered as the refund recorded (a refund
    of before 0017 keeps none: any reason), not refused, and ``GET /orders/{id}/payment``
    would say none. Each reason is the audit trail's too (the refund's entry, its
    ``detail``)."""
    refuse_losing(
        f"{S}.payments",
        "refund_reason IS NOT NULL",
        "why each refund recorded by hand was made, against which the same reference given"
        " again is checked (the audit trail's payment.refund entries say it too)",
        f"UPDATE {S}.payments SET refund_reason = NULL WHERE refund_reason IS NOT NULL",
    )
    op.drop_column("payments", "refund_reason", schema=S)

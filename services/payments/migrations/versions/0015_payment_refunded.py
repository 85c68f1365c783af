"""a ``void_refused`` payment refunded by hand (``refunded``): the transfer's reference, and
when operations recorded it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("refund_reference", sa.String(128), nullable=True), schema=S
    )
    op.add_column(
        "payments",
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        schema=S,
    )


def downgrade() -> None:
    """Refused while a payment is ``refunded``: the code before knows no such status, and the
    refund's reference would be lost. The way out it names leaves such a payment
    ``void_refused``, or ``voided`` for a loan's (from 2026-12-06: what its buyer had repaid
    refunded, which the code before keeps in no column), its refund posted in the ledger
    staying."""
    refuse_losing(
        f"{S}.payments",
        "refund_reference IS NOT NULL OR status = 'refunded'",
        "the references of refunds recorded by hand",
        f"UPDATE {S}.payments SET status = CASE WHEN loan_id IS NULL THEN 'void_refused'"
        " ELSE 'voided' END, refund_owed_fen = CASE WHEN loan_id IS NULL THEN refund_owed_fen"
        " END, refund_reference = NULL, refunded_at = NULL WHERE status = 'refunded'",
    )
    op.drop_column("payments", "refunded_at", schema=S)
    op.drop_column("payments", "refund_reference", schema=S)

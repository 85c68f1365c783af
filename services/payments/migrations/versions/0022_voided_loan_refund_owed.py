"""what a voided loan owes its buyer back, on its payment (``refund_owed_fen``, as a
``void_refused`` charge's): ``GET /orders/{id}/payment`` and ``GET /payments?status=voided``
said nothing of it, only the loan and the ledger did; and an index of those still owed, which
the alert's gauge counts

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    # The loans voided before: what the ledger owes their buyers (buyer_refund_payable, a
    # liability: credited while owed). Those refunded since say it already.
    op.execute(
        f"UPDATE {S}.payments p SET refund_owed_fen = owed.fen FROM ("
        f"SELECT loan_id, -SUM(amount_fen) AS fen FROM {S}.ledger_entries"
        " WHERE account = 'buyer_refund_payable' AND loan_id IS NOT NULL GROUP BY loan_id"
        ") owed WHERE p.status = 'voided' AND p.loan_id = owed.loan_id AND owed.fen > 0"
    )
    # Those still owed, counted at every sample for the alert (a few among every payment).
    op.create_index(
        "payments_loans_owed_back",
        "payments",
        ["order_id"],
        schema=S,
        postgresql_where=sa.text("status = 'voided' AND refund_owed_fen IS NOT NULL"),
    )


def downgrade() -> None:
    """Loses nothing the older version reads: a voided loan's ``refund_owed_fen`` stays, shown
    as it is (the older version reads what is owed from the ledger, and sets the column to
    what was paid back when a refund is recorded)."""
    op.drop_index("payments_loans_owed_back", "payments", schema=S)

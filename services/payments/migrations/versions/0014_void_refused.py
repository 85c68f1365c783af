"""a prepaid payment whose void the gateway refused for good (``void_refused``): what is owed
back to the buyer, and the gateway's answer

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("refund_owed_fen", sa.BigInteger(), nullable=True), schema=S
    )
    op.add_column("payments", sa.Column("gateway_refusal", sa.Text(), nullable=True), schema=S)


def downgrade() -> None:
    """Refused while a payment is ``void_refused`` (what its buyer is owed, and why, would be
    lost), or is ``voiding`` with an operator's word that the gateway lost its charge
    (``caravan payments charge-lost``: the older version would void it for ever, unsaid). The
    way out it names leaves a ``void_refused`` payment ``voiding`` with no attempt due, as the
    code before shows it (its gauge) and never calls the gateway for it again, and drops the
    word. A voided loan's ``refund_owed_fen`` (payments 0022) does not hold it back: the older
    version reads what is owed back from the ledger (``buyer_refund_payable``)."""
    refuse_losing(
        f"{S}.payments",
        "status = 'void_refused' OR gateway_refusal IS NOT NULL",
        "prepaid charges the gateway refused to void, or was said to have lost, and what is"
        " owed back to their buyers",
        f"UPDATE {S}.payments SET status = 'voiding', next_attempt_at = CASE WHEN status ="
        " 'voiding' THEN next_attempt_at END, refund_owed_fen = NULL, gateway_refusal = NULL"
        " WHERE status = 'void_refused' OR (status = 'voiding' AND gateway_refusal IS NOT NULL)",
    )
    op.drop_column("payments", "gateway_refusal", schema=S)
    op.drop_column("payments", "refund_owed_fen", schema=S)

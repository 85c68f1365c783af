"""indexes of the loans and the repayments by the time they were made: the loan book (``GET
/loans``, ``caravan payments loans``) and the repayments of a period (``GET /repayments``,
``caravan payments repayments``) read every loan or repayment ever made, and sorted them, for
a page, and summed every repayment for a period's totals

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 23:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.create_index("loans_created", "loans", ["created_at", "loan_id"], schema=S)
    op.create_index(
        "repayments_created",
        "repayments",
        ["created_at", "loan_id", "idempotency_key"],
        schema=S,
    )


def downgrade() -> None:
    op.drop_index("repayments_created", table_name="repayments", schema=S)
    op.drop_index("loans_created", table_name="loans", schema=S)

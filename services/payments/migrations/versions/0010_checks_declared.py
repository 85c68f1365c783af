"""the CHECK constraints the tables declared and 0001 did not make: a credit limit and what a
loan owes are not negative, a loan lends something

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 17:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"
CHECKS = {
    "credit_lines_credit_limit_fen_check": ("credit_lines", "credit_limit_fen >= 0"),
    "loans_principal_fen_check": ("loans", "principal_fen > 0"),
    "loans_outstanding_fen_check": ("loans", "outstanding_fen >= 0"),
}


def upgrade() -> None:
    for name, (table, condition) in CHECKS.items():
        op.create_check_constraint(name, table, condition, schema=S)


def downgrade() -> None:
    for name, (table, _) in CHECKS.items():
        op.drop_constraint(name, table, schema=S, type_="check")

"""the two CHECK constraints the tables declared and 0001 did not make: a product's price is
not negative, a reservation line holds something

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 17:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "inventory"
CHECKS = {
    "products_unit_price_fen_check": ("products", "unit_price_fen >= 0"),
    "reservation_lines_quantity_check": ("reservation_lines", "quantity > 0"),
}


def upgrade() -> None:
    for name, (table, condition) in CHECKS.items():
        op.create_check_constraint(name, table, condition, schema=S)


def downgrade() -> None:
    for name, (table, _) in CHECKS.items():
        op.drop_constraint(name, table, schema=S, type_="check")

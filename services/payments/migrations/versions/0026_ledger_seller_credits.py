"""indexes of the ledger's credits of the sellers, by time and by seller: what each seller is
owed (``GET /payables``, ``caravan payments payables``) and a seller's orders (``GET
/payables/{seller}/orders``) read every payable and every ledger entry for a period's

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"
CREDITED = sa.text("amount_fen < 0 AND starts_with(account, 'seller_payable:')")
INDEXES = {
    "ledger_seller_credits": ["created_at", "account", "order_id"],
    "ledger_credits_of_seller": ["account", "created_at", "order_id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "ledger_entries", columns, schema=S, postgresql_where=CREDITED)


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="ledger_entries", schema=S)

"""an index of the payments of platform orders, of any status: a platform order (app,
order_ref) is collected for one order id, and each platform order's reservation looks for
another's payment of it (``payments_awaiting_platform`` holds only those awaiting)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.create_index(
        "payments_platform_orders",
        "payments",
        ["collected_by", "order_ref"],
        schema=S,
        postgresql_where=sa.text("collected_by IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("payments_platform_orders", table_name="payments", schema=S)

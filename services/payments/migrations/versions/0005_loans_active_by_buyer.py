"""an index of active loans by buyer, for the credit check of every microloan

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "loans_active_by_buyer",
        "loans",
        ["buyer_id"],
        schema="payments",
        postgresql_include=["outstanding_fen"],
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_index("loans_active_by_buyer", table_name="loans", schema="payments")

"""a prepaid order a marketplace platform was paid for names the platform's app

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "payments", sa.Column("collected_by", sa.String(64), nullable=True), schema="payments"
    )


def downgrade() -> None:
    op.drop_column("payments", "collected_by", schema="payments")

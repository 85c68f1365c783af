"""outcomes parked until their order's order.placed comes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 23:00:00
"""

from collections.abc import Sequence

from shared.db.messaging_migration import create_parked_table, drop_parked_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_parked_table("platform")


def downgrade() -> None:
    drop_parked_table("platform")

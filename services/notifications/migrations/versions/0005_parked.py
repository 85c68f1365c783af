"""events parked until their order's order.placed comes (confirmations, cancellations)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 23:00:00
"""

from collections.abc import Sequence

from shared.db.messaging_migration import create_parked_table, drop_parked_table

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_parked_table("notifications")


def downgrade() -> None:
    drop_parked_table("notifications")

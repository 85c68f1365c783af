"""an outbox row Kafka refuses for good is set aside by the relay: when, and why

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 23:00:00
"""

from collections.abc import Sequence

from shared.db.messaging_migration import add_outbox_refusals, drop_outbox_refusals

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_refusals("notifications")


def downgrade() -> None:
    drop_outbox_refusals("notifications")

"""an outbox row Kafka refuses for good is set aside by the relay: when, and why

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 23:00:00
"""

from collections.abc import Sequence

from shared.db.messaging_migration import add_outbox_refusals, drop_outbox_refusals

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_refusals("payments")


def downgrade() -> None:
    drop_outbox_refusals("payments")

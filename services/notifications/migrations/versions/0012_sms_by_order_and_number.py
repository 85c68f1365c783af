"""sms: indexes of an order's texts and of those to a number, newest first, which
``GET /sms`` (``caravan texts``) reads a page of; without them a page read every text kept

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "notifications"


def upgrade() -> None:
    op.create_index("sms_order", "sms", ["order_id", "created_at", "sms_id"], schema=S)
    op.create_index("sms_to", "sms", ["to", "created_at", "sms_id"], schema=S)


def downgrade() -> None:
    # Dropped without refusing: indexes hold no data (the older version reads none).
    op.drop_index("sms_to", table_name="sms", schema=S)
    op.drop_index("sms_order", table_name="sms", schema=S)

"""sms.provider_id is text, indexed by its hash: a gateway's message id is opaque, and one
longer than 128 characters made recording the batch that sent it fail, and the batch was
sent again after every lease

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "notifications"


def upgrade() -> None:
    # varchar to text is binary-coercible: PostgreSQL rewrites no row.
    op.alter_column(
        "sms",
        "provider_id",
        type_=sa.Text(),
        existing_type=sa.String(length=128),
        existing_nullable=True,
        schema=S,
    )
    # A B-tree entry holds at most 2704 bytes: a longer id (random characters do not
    # compress) would fail the update as the column's limit did. A hash index holds any
    # length, and receipts look an id up only by equality.
    op.drop_index("sms_provider", table_name="sms", schema=S)
    op.create_index("sms_provider", "sms", ["provider_id"], schema=S, postgresql_using="hash")


def downgrade() -> None:
    """Refused while a text holds a longer id, which its delivery receipts name and the
    narrowed column cannot hold (PostgreSQL refuses too, but says only "value too long")."""
    refuse_losing(
        f"{S}.sms",
        "length(provider_id) > 128",
        "the gateway's message ids longer than 128 characters (which its delivery receipts name)",
        f"UPDATE {S}.sms SET provider_id = NULL WHERE length(provider_id) > 128",
    )
    op.drop_index("sms_provider", table_name="sms", schema=S)
    op.alter_column(
        "sms",
        "provider_id",
        type_=sa.String(length=128),
        existing_type=sa.Text(),
        existing_nullable=True,
        schema=S,
    )
    op.create_index("sms_provider", "sms", ["provider_id"], schema=S)

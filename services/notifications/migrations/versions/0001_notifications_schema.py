"""notifications schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 01:03:22.151900
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.messaging_migration import create_messaging_tables, drop_messaging_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_messaging_tables("notifications")
    op.create_table(
        "recipients",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
        schema="notifications",
    )
    op.create_table(
        "sms",
        sa.Column("sms_id", sa.String(length=36), nullable=False),
        sa.Column("dedup_key", sa.String(length=600), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("to", sa.String(length=20), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sms_id"),
        sa.UniqueConstraint("dedup_key"),
        schema="notifications",
    )
    op.create_index(
        "sms_pending",
        "sms",
        ["created_at"],
        unique=False,
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "sms_pending",
        table_name="sms",
        schema="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("sms", schema="notifications")
    op.drop_table("recipients", schema="notifications")
    drop_messaging_tables("notifications")

"""platform schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 04:30:00.000000
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db.messaging_migration import create_messaging_tables, drop_messaging_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "platform"


def _at(name: str, nullable: bool = False) -> sa.Column[datetime]:
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    create_messaging_tables(SCHEMA)
    op.create_table(
        "pushes",
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("push_id", sa.String(length=128), nullable=False),
        _at("received_at"),
        sa.PrimaryKeyConstraint("app", "push_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "mappings",
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("app", "kind", "external_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "platform_orders",
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("platform_order_id", sa.String(length=64), nullable=False),
        sa.Column("request_event_id", sa.String(length=256), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        _at("created_at"),
        sa.PrimaryKeyConstraint("app", "platform_order_id"),
        schema=SCHEMA,
    )
    op.create_index("platform_orders_order_id", "platform_orders", ["order_id"], schema=SCHEMA)
    op.create_table(
        "problems",
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("platform_order_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("occurrences", sa.Integer(), server_default="1", nullable=False),
        _at("first_seen_at"),
        _at("last_seen_at"),
        _at("resolved_at", nullable=True),
        sa.PrimaryKeyConstraint("app", "platform_order_id", "kind"),
        schema=SCHEMA,
    )
    op.create_table(
        "callbacks",
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("platform_order_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _at("next_attempt_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _at("created_at"),
        _at("delivered_at", nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "callbacks_due",
        "callbacks",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )


def downgrade() -> None:
    op.drop_index("callbacks_due", table_name="callbacks", schema=SCHEMA)
    op.drop_table("callbacks", schema=SCHEMA)
    op.drop_table("problems", schema=SCHEMA)
    op.drop_index("platform_orders_order_id", table_name="platform_orders", schema=SCHEMA)
    op.drop_table("platform_orders", schema=SCHEMA)
    op.drop_table("mappings", schema=SCHEMA)
    op.drop_table("pushes", schema=SCHEMA)
    drop_messaging_tables(SCHEMA)

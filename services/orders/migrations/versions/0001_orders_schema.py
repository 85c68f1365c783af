"""orders schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 01:03:09.102646
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db.messaging_migration import create_messaging_tables, drop_messaging_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_messaging_tables("orders")
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("payment_method", sa.String(length=16), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stock", sa.String(length=16), nullable=False),
        sa.Column("payment", sa.String(length=16), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=True),
        sa.Column("loan_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("order_id"),
        sa.UniqueConstraint("source", "order_ref", name="orders_idempotency_key"),
        schema="orders",
    )
    op.create_index(
        "orders_buyer", "orders", ["buyer_id", "placed_at"], unique=False, schema="orders"
    )
    op.create_index(
        "orders_pending_deadline",
        "orders",
        ["deadline_at"],
        unique=False,
        schema="orders",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "timeline",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column(
            "time", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        schema="orders",
    )
    op.create_index(
        op.f("ix_orders_timeline_order_id"), "timeline", ["order_id"], unique=False, schema="orders"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_orders_timeline_order_id"), table_name="timeline", schema="orders")
    op.drop_table("timeline", schema="orders")
    op.drop_index(
        "orders_pending_deadline",
        table_name="orders",
        schema="orders",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("orders_buyer", table_name="orders", schema="orders")
    op.drop_table("orders", schema="orders")
    drop_messaging_tables("orders")

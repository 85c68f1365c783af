"""sms delivery: retries, receipts, sellers, products, opt-outs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db.migrate import refuse_losing

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "notifications"


def upgrade() -> None:
    op.add_column("recipients", sa.Column("lines", postgresql.JSONB(), nullable=True), schema=S)
    now = sa.text("now()")
    op.add_column(
        "sms",
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=now, nullable=False
        ),
        schema=S,
    )
    op.add_column("sms", sa.Column("provider_id", sa.String(length=128), nullable=True), schema=S)
    op.add_column("sms", sa.Column("last_error", sa.Text(), nullable=True), schema=S)
    op.add_column(
        "sms", sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True), schema=S
    )
    op.drop_index(
        "sms_pending", table_name="sms", schema=S, postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index(
        "sms_due",
        "sms",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index("sms_provider", "sms", ["provider_id"], schema=S)
    op.create_table(
        "sellers",
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("locale", sa.String(length=8), server_default="zh-CN", nullable=False),
        sa.PrimaryKeyConstraint("seller_id"),
        schema=S,
    )
    op.create_table(
        "products",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("names", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("sku"),
        schema=S,
    )
    op.create_table(
        "order_sellers",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "seller_id"),
        schema=S,
    )
    op.create_table(
        "confirmed_orders",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("order_ref", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
        schema=S,
    )
    op.create_table(
        "opt_outs",
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("phone"),
        schema=S,
    )


def downgrade() -> None:
    """Refused while anyone has opted out of texts: the older version has no opt-outs, and
    upgraded again would text them; and while a text holds what the gateway said of it (its
    id, which its delivery receipts name; when it was delivered; why it failed): nothing else
    keeps it, and upgraded again a receipt for a text sent before would find none. What else
    goes is derived again: sellers, products and orders' sellers come again with the next
    seed and the orders' events; a text's next attempt is due at once."""
    refuse_losing(
        f"{S}.opt_outs",
        None,
        "who opted out of texts (the older version, and this one upgraded again, would text them)",
        f"DELETE FROM {S}.opt_outs",
    )
    said = "provider_id IS NOT NULL OR delivered_at IS NOT NULL OR last_error IS NOT NULL"
    refuse_losing(
        f"{S}.sms",
        said,
        "what the gateway said of each text: its id (which its delivery receipts name), when it"
        " was delivered, why it failed",
        f"UPDATE {S}.sms SET provider_id = NULL, delivered_at = NULL, last_error = NULL"
        f" WHERE {said}",
    )
    for table in ("opt_outs", "confirmed_orders", "order_sellers", "products", "sellers"):
        op.drop_table(table, schema=S)
    op.drop_index("sms_provider", table_name="sms", schema=S)
    op.drop_index(
        "sms_due",
        table_name="sms",
        schema=S,
        postgresql_where=sa.text("status IN ('pending', 'sending')"),
    )
    op.create_index(
        "sms_pending",
        "sms",
        ["created_at"],
        schema=S,
        postgresql_where=sa.text("status = 'pending'"),
    )
    for column in ("delivered_at", "last_error", "provider_id", "next_attempt_at"):
        op.drop_column("sms", column, schema=S)
    op.drop_column("recipients", "lines", schema=S)

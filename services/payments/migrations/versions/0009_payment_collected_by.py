"""a prepaid order a marketplace platform placed: its app and ref on the payment, and the
orders the platform adapter says the platform was paid for

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column("payments", sa.Column("collected_by", sa.String(64), nullable=True), schema=S)
    op.add_column("payments", sa.Column("order_ref", sa.String(64), nullable=True), schema=S)
    op.create_index(
        "payments_awaiting_platform",
        "payments",
        ["collected_by", "order_ref"],
        schema=S,
        postgresql_where=sa.text("status = 'awaiting'"),
    )
    op.create_table(
        "platform_paid",
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("order_ref", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("app", "order_ref"),
        schema=S,
    )


def downgrade() -> None:
    refuse_losing(
        f"{S}.platform_paid",
        None,
        "the orders the platform adapter said a platform was paid for",
        f"DELETE FROM {S}.platform_paid",
    )
    refuse_losing(
        f"{S}.payments",
        "collected_by IS NOT NULL OR order_ref IS NOT NULL",
        "which platform placed a prepaid payment's order, and its ref",
        f"UPDATE {S}.payments SET collected_by = NULL, order_ref = NULL"
        " WHERE collected_by IS NOT NULL OR order_ref IS NOT NULL",
    )
    op.drop_table("platform_paid", schema=S)
    op.drop_index("payments_awaiting_platform", table_name="payments", schema=S)
    op.drop_column("payments", "order_ref", schema=S)
    op.drop_column("payments", "collected_by", schema=S)

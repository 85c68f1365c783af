"""payments schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 01:03:16.958565
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
    create_messaging_tables("payments")
    op.create_table(
        "credit_lines",
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("credit_limit_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("buyer_id"),
        schema="payments",
    )
    op.create_table(
        "loans",
        sa.Column("loan_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("principal_fen", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_fen", sa.BigInteger(), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("loan_id"),
        sa.UniqueConstraint("order_id"),
        schema="payments",
    )
    op.create_index(
        op.f("ix_payments_loans_buyer_id"), "loans", ["buyer_id"], unique=False, schema="payments"
    )
    op.create_table(
        "payments",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("buyer_id", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("loan_id", sa.String(length=36), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("order_id"),
        schema="payments",
    )
    op.create_table(
        "instalments",
        sa.Column("loan_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("due", sa.Date(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["loan_id"],
            ["payments.loans.loan_id"],
        ),
        sa.PrimaryKeyConstraint("loan_id", "number"),
        schema="payments",
    )


def downgrade() -> None:
    op.drop_table("instalments", schema="payments")
    op.drop_table("payments", schema="payments")
    op.drop_index(op.f("ix_payments_loans_buyer_id"), table_name="loans", schema="payments")
    op.drop_table("loans", schema="payments")
    op.drop_table("credit_lines", schema="payments")
    drop_messaging_tables("payments")

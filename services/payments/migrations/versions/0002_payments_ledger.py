"""microloan schedules with interest, repayments, payables, reminders, the prepaid gateway
and the double-entry ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"

# Every ledger transaction must sum to zero: checked once per transaction at commit.
BALANCE_FUNCTION = """
CREATE FUNCTION payments.ledger_txn_balanced() RETURNS trigger AS $$
DECLARE total bigint;
BEGIN
  SELECT sum(amount_fen) INTO total FROM payments.ledger_entries WHERE txn_id = NEW.txn_id;
  IF total IS DISTINCT FROM 0 THEN
    RAISE EXCEPTION 'ledger transaction % does not balance: %', NEW.txn_id, total
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql
"""
BALANCE_TRIGGER = """
CREATE CONSTRAINT TRIGGER ledger_txn_balanced
AFTER INSERT OR UPDATE ON payments.ledger_entries
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION payments.ledger_txn_balanced()
"""
# Entries are never changed or removed: a correction is a new transaction.
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION payments.ledger_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'ledger entries are append-only' USING ERRCODE = 'check_violation';
END $$ LANGUAGE plpgsql
"""
APPEND_ONLY_TRIGGER = """
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON payments.ledger_entries
FOR EACH ROW EXECUTE FUNCTION payments.ledger_append_only()
"""


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        schema=S,
    )
    op.add_column(
        "payments",
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        schema=S,
    )
    op.add_column(
        "payments", sa.Column("gateway_ref", sa.String(length=64), nullable=True), schema=S
    )
    op.add_column(
        "loans",
        sa.Column("interest_fen", sa.BigInteger(), server_default="0", nullable=False),
        schema=S,
    )
    op.add_column(
        "loans",
        sa.Column("monthly_rate_bp", sa.Integer(), server_default="0", nullable=False),
        schema=S,
    )
    op.add_column(
        "instalments",
        sa.Column("interest_fen", sa.BigInteger(), server_default="0", nullable=False),
        schema=S,
    )
    op.add_column(
        "instalments",
        sa.Column("paid_fen", sa.BigInteger(), server_default="0", nullable=False),
        schema=S,
    )
    op.create_check_constraint(
        "instalment_paid_range", "instalments", "paid_fen >= 0 AND paid_fen <= amount_fen", schema=S
    )
    op.create_table(
        "repayments",
        sa.Column("loan_id", sa.String(length=36), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("requested_fen", sa.BigInteger(), nullable=True),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("principal_fen", sa.BigInteger(), nullable=False),
        sa.Column("interest_fen", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_fen > 0"),
        sa.ForeignKeyConstraint(["loan_id"], ["payments.loans.loan_id"]),
        sa.PrimaryKeyConstraint("loan_id", "idempotency_key"),
        schema=S,
    )
    op.create_table(
        "payables",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.CheckConstraint("amount_fen >= 0"),
        sa.PrimaryKeyConstraint("order_id", "seller_id"),
        schema=S,
    )
    op.create_table(
        "instalment_reminders",
        sa.Column("loan_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("loan_id", "number", "stage"),
        schema=S,
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("txn_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=96), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        sa.Column("loan_id", sa.String(length=36), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_fen <> 0"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("txn_id", "account"),
        schema=S,
    )
    op.create_index(
        op.f("ix_payments_ledger_entries_order_id"), "ledger_entries", ["order_id"], schema=S
    )
    op.create_index(
        op.f("ix_payments_ledger_entries_loan_id"), "ledger_entries", ["loan_id"], schema=S
    )
    op.execute(BALANCE_FUNCTION)
    op.execute(BALANCE_TRIGGER)
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(APPEND_ONLY_TRIGGER)


def downgrade() -> None:
    """Refused while the ledger holds an entry, a seller is still owed for an order, or a
    repayment was made: the older version keeps none of them (the record of every charge,
    loan, repayment and payable posted; what each seller is owed; the repayments and their
    keys). Keep a copy first (``pg_dump --table 'payments.(ledger_entries|payables|repayments)'``);
    the entries are append-only, hence the TRUNCATE. Payables cancelled, reminders sent and the
    interest columns go without refusing (the loans keep their principal and schedule)."""
    refuse_losing(
        f"{S}.payables",
        "status IN ('pending', 'owed')",
        "what each seller is owed for its orders (payables)",
        f"DELETE FROM {S}.payables",
    )
    refuse_losing(
        f"{S}.repayments",
        None,
        "the repayments made on loans, and their idempotency keys",
        f"DELETE FROM {S}.repayments",
    )
    refuse_losing(
        f"{S}.ledger_entries",
        None,
        "the ledger: every charge, loan, repayment and payable posted",
        f"TRUNCATE {S}.ledger_entries",
    )
    op.execute("DROP TRIGGER ledger_append_only ON payments.ledger_entries")
    op.execute("DROP FUNCTION payments.ledger_append_only()")
    op.execute("DROP TRIGGER ledger_txn_balanced ON payments.ledger_entries")
    op.execute("DROP FUNCTION payments.ledger_txn_balanced()")
    op.drop_index(op.f("ix_payments_ledger_entries_loan_id"), table_name="ledger_entries", schema=S)
    op.drop_index(
        op.f("ix_payments_ledger_entries_order_id"), table_name="ledger_entries", schema=S
    )
    op.drop_table("ledger_entries", schema=S)
    op.drop_table("instalment_reminders", schema=S)
    op.drop_table("payables", schema=S)
    op.drop_table("repayments", schema=S)
    op.drop_constraint("instalment_paid_range", "instalments", schema=S)
    op.drop_column("instalments", "paid_fen", schema=S)
    op.drop_column("instalments", "interest_fen", schema=S)
    op.drop_column("loans", "monthly_rate_bp", schema=S)
    op.drop_column("loans", "interest_fen", schema=S)
    op.drop_column("payments", "gateway_ref", schema=S)
    op.drop_column("payments", "next_attempt_at", schema=S)
    op.drop_column("payments", "attempts", schema=S)

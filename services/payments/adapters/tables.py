"""The payments schema: credit lines, payments per order, loans and their instalments."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)

from shared.messaging.tables import add_messaging_tables

SCHEMA = "payments"
metadata = MetaData(schema=SCHEMA)

credit_lines = Table(
    "credit_lines",
    metadata,
    Column("buyer_id", String(64), primary_key=True),
    Column(
        "credit_limit_fen", BigInteger, CheckConstraint("credit_limit_fen >= 0"), nullable=False
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

payments = Table(
    "payments",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("buyer_id", String(64), nullable=True),
    Column("method", String(16), nullable=True),
    Column("amount_fen", BigInteger, nullable=True),
    # authorized | declined | voided | cancelled (cancelled before any payment was asked)
    Column("status", String(16), nullable=False),
    Column("loan_id", String(36), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

loans = Table(
    "loans",
    metadata,
    Column("loan_id", String(36), primary_key=True),
    Column("order_id", String(36), nullable=False, unique=True),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("principal_fen", BigInteger, CheckConstraint("principal_fen > 0"), nullable=False),
    Column("outstanding_fen", BigInteger, CheckConstraint("outstanding_fen >= 0"), nullable=False),
    Column("term_months", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # active | voided | repaid
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

instalments = Table(
    "instalments",
    metadata,
    Column("loan_id", String(36), ForeignKey("payments.loans.loan_id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("due", Date, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    PrimaryKeyConstraint("loan_id", "number"),
)

outbox, inbox = add_messaging_tables(metadata)

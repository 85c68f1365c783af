"""The orders schema."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.messaging.tables import add_messaging_tables

SCHEMA = "orders"
metadata = MetaData(schema=SCHEMA)

IDEMPOTENCY_KEY = "orders_idempotency_key"
"""The constraint of an order's (source, order_ref): the one key two requests placing the same
order race for."""

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("source", String(256), nullable=False),
    Column("order_ref", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("buyer_id", String(64), nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("payment_method", String(16), nullable=False),
    Column("term_months", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("stock", String(16), nullable=False),
    Column("payment", String(16), nullable=False),
    Column("total_fen", BigInteger, nullable=True),
    Column("loan_id", String(64), nullable=True),
    Column("schedule", JSONB, nullable=True),
    Column("delivery", JSONB, nullable=True),  # where to send it, as the request said
    # When ``delivery`` was erased, its retention past (orders_delivery_retention_days).
    Column("delivery_erased_at", DateTime(timezone=True), nullable=True),
    Column("reason", String(32), nullable=True),
    # The SKUs of its lines a cancelled order's reason is of, when it is a product's
    # (stock.rejected's skus, as order.cancelled says them); NULL for another reason, and on
    # orders cancelled before migration 0013.
    Column("skus", JSONB(none_as_null=True), nullable=True),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("deadline_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # W3C trace context of the request that placed the order, so that the expiry sweep's
    # cancellation continues the order's trace (none on orders placed before 2026-12-04).
    Column("trace_headers", JSONB(none_as_null=True), nullable=True),
    # The name of the token that placed an HTTP order (POST /orders): a bound token reaches
    # the orders it placed (docs/security.md). None on Kafka's and platforms' orders, and on
    # HTTP orders placed before 2026-12-06.
    Column("placed_by", String(64), nullable=True),
    UniqueConstraint("source", "order_ref", name=IDEMPOTENCY_KEY),
    Index("orders_pending_deadline", "deadline_at", postgresql_where=text("status = 'pending'")),
    Index("orders_buyer", "buyer_id", "placed_at"),
    # An operator's list of every buyer's orders of one status, newest first (GET /orders).
    Index("orders_status_placed", "status", "placed_at", "order_id"),
    # An operator's orders of one order_ref, of any source (GET /orders?order_ref=).
    Index("orders_ref", "order_ref"),
    # An operator's orders of one source, of each status newest first (GET /orders?source=).
    Index("orders_source_status_placed", "source", "status", "placed_at", "order_id"),
    # An operator's orders of one product (GET /orders?sku=): the lines never change, so an
    # order's updates stay HOT (0015).
    Index(
        "orders_lines", "lines", postgresql_using="gin", postgresql_ops={"lines": "jsonb_path_ops"}
    ),
    # Half of each page left for the orders' next versions: an order's first update (its
    # stock reserved, no indexed column changed) is then HOT, no entry in any index (0014).
    postgresql_with={"fillfactor": 50},
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", String(36), nullable=False, index=True),
    Column("type", String(64), nullable=False),
    # What the step names, where an operator needs it (a refund's amount and transfer
    # reference, ``payment.refunded``); NULL on the other steps, and on refunds recorded
    # before migration 0012.
    Column("amount_fen", BigInteger, nullable=True),
    Column("reference", Text, nullable=True),
    # When the step was written (its statement, at the transaction's commit): now() is when
    # the transaction began, so a batch that waited for an order's lock wrote steps dated
    # before the steps they follow.
    Column(
        "time",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.clock_timestamp(),
    ),
)

order_sellers = Table(
    "order_sellers",
    metadata,
    # The sellers whose goods an order holds, as its stock.reserved named them (GET
    # /orders?seller=); none for an order never reserved, nor one reserved before migration
    # 0015. A table of its own, not a column: the order's row, updated by the reservation,
    # keeps its HOT update (0014).
    Column("seller_id", String(64), primary_key=True),
    Column("order_id", String(36), ForeignKey("orders.orders.order_id"), primary_key=True),
)

outbox, inbox = add_messaging_tables(metadata)

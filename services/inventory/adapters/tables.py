"""The inventory schema. Lot counters obey ``received = available + reserved + sold + spoiled``
and never go negative; the database enforces both."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.messaging.tables import add_messaging_tables

SCHEMA = "inventory"
metadata = MetaData(schema=SCHEMA)

sellers = Table(
    "sellers",
    metadata,
    Column("seller_id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("county", String(64), nullable=False),
    Column("phone", String(20), nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("seller_id", String(64), ForeignKey("inventory.sellers.seller_id"), nullable=False),
    Column("unit_price_fen", BigInteger, CheckConstraint("unit_price_fen >= 0"), nullable=False),
    Column("name", JSONB, nullable=False),
    # A seller's products by SKU (GET /stock?seller=, caravan inventory stock --seller): 0011.
    Index("ix_inventory_products_seller_sku", "seller_id", "sku"),
)

lots = Table(
    "lots",
    metadata,
    Column("lot_id", String(64), primary_key=True),
    Column("sku", String(64), ForeignKey("inventory.products.sku"), nullable=False),
    Column("received", Integer, nullable=False),
    Column("available", Integer, nullable=False),
    Column("reserved", Integer, nullable=False, server_default="0"),
    Column("sold", Integer, nullable=False, server_default="0"),
    Column("spoiled", Integer, nullable=False, server_default="0"),
    Column("available_from", Date, nullable=False),
    Column("best_before", Date, nullable=False),
    # False: stopped selling (no new holds; those it has are sold or released as before).
    Column("on_sale", Boolean, nullable=False, server_default=true()),
    CheckConstraint(
        "available >= 0 AND reserved >= 0 AND sold >= 0 AND spoiled >= 0", name="lots_nonnegative"
    ),
    CheckConstraint("received = available + reserved + sold + spoiled", name="lots_conserved"),
    # An order's lots: its SKUs' not expired on its day (a SKU's expired ones are most of
    # them after a season). Not partial on ``available > 0``: an index on a column that
    # every reservation changes would make every such update write the indexes too.
    Index("ix_inventory_lots_sku_best_before", "sku", "best_before"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),  # ledger.HoldStatus
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When the hold was reported expired (``stock.expired``); reported once.
    Column("expiry_notified_at", DateTime(timezone=True), nullable=True),
    # W3C trace context of the order event that made the hold, so that its report
    # (``stock.expired``) continues the order's trace (none on holds before 2026-12-04).
    Column("trace_headers", JSONB(none_as_null=True), nullable=True),
    # Until when the hold lasts, as its stock.reserved said: the order's deadline or the
    # hold's time, whichever is sooner (null on holds before migration 0010, and on refusals).
    Column("held_until", DateTime(timezone=True), nullable=True),
    Index(
        "ix_inventory_reservations_held",
        "created_at",
        postgresql_where=text("status = 'reserved' AND expiry_notified_at IS NULL"),
    ),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("order_id", String(36), ForeignKey("inventory.reservations.order_id"), nullable=False),
    Column("lot_id", String(64), ForeignKey("inventory.lots.lot_id"), nullable=False),
    Column("quantity", Integer, CheckConstraint("quantity > 0"), nullable=False),
    PrimaryKeyConstraint("order_id", "lot_id"),
    # The orders holding a lot (GET /lots/{id}/holds): the key, by order first, cannot find them.
    Index("ix_inventory_reservation_lines_lot_id", "lot_id"),
)

lot_adjustments = Table(
    "lot_adjustments",
    metadata,
    Column("adjustment_id", String(64), primary_key=True),
    Column("lot_id", String(64), ForeignKey("inventory.lots.lot_id"), nullable=False, index=True),
    Column("delta", Integer, CheckConstraint("delta <> 0"), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Who made it (a token's name, or the OS user of the CLI); null on those made before
    # migration 0007, whose author is in the audit trail (``lot.adjust``).
    Column("actor", String(128), nullable=True),
    # Units lost to spoilage (delta < 0), written off as spoiled: ``received`` unchanged.
    Column("spoiled", Boolean, nullable=False, server_default=false()),
)

# A lot's SKU or dates set right (mistyped when it was received): ``before`` and ``after``
# hold the fields changed, as JSON (``{"best_before": "2027-08-31"}``).
lot_corrections = Table(
    "lot_corrections",
    metadata,
    Column("correction_id", String(64), primary_key=True),
    Column("lot_id", String(64), ForeignKey("inventory.lots.lot_id"), nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("before", JSONB, nullable=False),
    Column("after", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A lot stopped selling (``on_sale`` false) or restarted: by whom, when and why.
lot_selling = Table(
    "lot_selling",
    metadata,
    Column("change_id", String(64), primary_key=True),
    Column("lot_id", String(64), ForeignKey("inventory.lots.lot_id"), nullable=False, index=True),
    Column("on_sale", Boolean, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox, inbox = add_messaging_tables(metadata)

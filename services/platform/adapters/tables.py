"""The platform schema: pushes seen (replay guard), the mapping table, platform orders placed
with us (one per app and platform order), those closed before they were placed, problems for
operations, status callbacks, and the outcomes waiting for their order's ``order.placed``."""

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.messaging.parking import add_parked_table
from shared.messaging.tables import add_messaging_tables

SCHEMA = "platform"
metadata = MetaData(schema=SCHEMA)

# Each accepted push's id (its ``push_id`` or ``nonce``, else its signature), fingerprint
# (``signing.fingerprint``) and signature (upper-case): the same push sent again is a
# duplicate, another push of that id refused (no fingerprint on rows from before 2026-12-04);
# a push of a signature taken is a duplicate too, whatever its parameters (the signed string
# has no separators: a captured push re-split, ``push_id=X`` sent as ``p=ush_idX``, still
# verifies; no signature on rows from before 2026-12-05). Rows older than the timestamp
# window can go: such a push is stale anyway. No index on ``received_at``: the retention
# prunes them hourly with the outbox (``bootstrap.forgotten``), when some 60 of the 75
# minutes of rows held are past their 15, and PostgreSQL reads them by a scan that stops at
# each chunk's 5,000 even with such an index (measured 2026-12-05, 300,000 rows: 240,000
# pruned in 49 chunks in about a second, index or not); it would only cost every push.
pushes = Table(
    "pushes",
    metadata,
    Column("app", String(64), nullable=False),
    Column("push_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sign", String(64), nullable=True),
    # What the push was answered, {"status", "problems", "errors"}, answered again to the same
    # push sent again (none on rows from before 2026-12-07: those are answered duplicate).
    Column("answer", JSONB(none_as_null=True), nullable=True),
    PrimaryKeyConstraint("app", "push_id"),
    Index("pushes_sign", "app", "sign", unique=True),
)

# kind 'sku': value {"sku"}; kind 'buyer': value {"buyer_id", "phone", "locale"}.
mappings = Table(
    "mappings",
    metadata,
    Column("app", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("external_id", String(128), nullable=False),
    Column("value", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("app", "kind", "external_id"),
)

# A platform order for which ``order.requested`` was published (once), its order id once
# ``order.placed`` names it, and what of it was placed (``orders.as_placed``: a later change
# of it is told; none on rows from before 2026-12-05).
platform_orders = Table(
    "platform_orders",
    metadata,
    Column("app", String(64), nullable=False),
    Column("platform_order_id", String(64), nullable=False),
    Column("request_event_id", String(256), nullable=False),
    Column("order_id", String(36), nullable=True),
    Column("placed", JSONB(none_as_null=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("app", "platform_order_id"),
    Index("platform_orders_order_id", "order_id"),
)

# A platform order a push found cancelled (``status``, as the platform said it) before it was
# placed with us. Cancelled is final on the platform: a push that read the order
# paid earlier but decides after this (a slow order API answer) opens a ``paid_after_cancelled``
# problem instead of placing it. Resolving that problem by hand (and only that) forgets it;
# so does the service's retention, once no read of it paid can still be decided (``seen_at``
# older than ``bootstrap.closed_kept_seconds``, 15 minutes and the order API's deadline by
# default).
closed_unplaced = Table(
    "closed_unplaced",
    metadata,
    Column("app", String(64), nullable=False),
    Column("platform_order_id", String(64), nullable=False),
    Column("status", String(64), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("app", "platform_order_id"),
    Index("closed_unplaced_seen", "seen_at"),  # pruned
)

# Why a pushed order could not be placed (unmapped SKU or buyer, invalid order): one row per
# order and kind, until a later push places the order (``resolved_at``).
problems = Table(
    "problems",
    metadata,
    Column("app", String(64), nullable=False),
    Column("platform_order_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("occurrences", Integer, nullable=False, server_default="1"),
    Column("first_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("app", "platform_order_id", "kind"),
    Index("problems_open", "kind", postgresql_where=text("resolved_at IS NULL")),
    Index("problems_newest", "first_seen_at", "app", "platform_order_id", "kind"),  # listed
)

# One status callback per terminal event; its id is the idempotency key sent to the platform.
callbacks = Table(
    "callbacks",
    metadata,
    Column("event_id", String(256), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("platform_order_id", String(64), nullable=False),
    Column("order_id", String(36), nullable=False),
    Column("outcome", String(16), nullable=False),  # confirmed | cancelled
    Column("reason", String(32), nullable=True),
    # pending | sending | delivered | failed
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # When a pending row is due; for a row being sent, when its claim lapses.
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # W3C trace context of the terminal event told, so that the call continues the order's
    # trace (none on callbacks queued before 2026-12-04).
    Column("trace_headers", JSONB(none_as_null=True), nullable=True),
    Index(
        "callbacks_due",
        "next_attempt_at",
        postgresql_where=text("status IN ('pending', 'sending')"),
    ),
    Index("callbacks_platform_order", "app", "platform_order_id"),
    Index("callbacks_newest", "created_at", "event_id"),  # listed, newest first
)

outbox, inbox = add_messaging_tables(metadata)
parked = add_parked_table(metadata)  # outcomes of platform orders not placed yet

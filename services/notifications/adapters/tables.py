"""The notifications schema: who to reach for an order (until it can text them no more,
and ``notifications_recipient_retention_days``), sellers and their goods and buyers'
languages (from the seed), which sellers an order concerns, the opt-out list, the SMS (one
per dedup key; a finished one kept ``notifications_sms_retention_days``), and the events
waiting for their order's ``order.placed``."""

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB

from shared.messaging.parking import add_parked_table
from shared.messaging.tables import add_messaging_tables

SCHEMA = "notifications"
metadata = MetaData(schema=SCHEMA)

recipients = Table(
    "recipients",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("order_ref", String(64), nullable=False),
    Column("phone", String(20), nullable=False),
    Column("locale", String(8), nullable=False),
    Column("lines", JSONB, nullable=True),  # [{sku, quantity}] from order.placed
    # When nothing could text this buyer about the order any more (handlers.nothing_to_text):
    # the row goes notifications_recipient_retention_days later.
    Column("done_at", DateTime(timezone=True), nullable=True),
)

sellers = Table(
    "sellers",
    metadata,
    Column("seller_id", String(64), primary_key=True),
    Column("phone", String(20), nullable=False),
    Column("locale", String(8), nullable=False, server_default="zh-CN"),
)

buyers = Table(
    "buyers",
    metadata,
    Column("buyer_id", String(64), primary_key=True),
    # The language a seed file gave the buyer: their texts', where an order leaves it out.
    Column("locale", String(8), nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("names", JSONB, nullable=False),  # {locale: name}
)

order_sellers = Table(
    "order_sellers",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("seller_id", String(64), primary_key=True),
    Column("lines", JSONB, nullable=False),  # [{sku, quantity, unit_price_fen}] of this seller
)

confirmed_orders = Table(
    "confirmed_orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("event_id", String(256), nullable=False),  # the order.confirmed event: dedup keys
    Column("order_ref", String(64), nullable=False),
)

opt_outs = Table(
    "opt_outs",
    metadata,
    Column("phone", String(20), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

sms = Table(
    "sms",
    metadata,
    Column("sms_id", String(36), primary_key=True),
    Column("dedup_key", String(600), nullable=False, unique=True),
    Column("purpose", String(32), nullable=False),
    Column("to", String(20), nullable=False),
    Column("locale", String(8), nullable=False),
    Column("text", Text, nullable=False),
    Column("encoding", String(8), nullable=False),
    Column("segments", Integer, nullable=False),
    Column("order_id", String(36), nullable=True),
    # pending | sending | sent | delivered | failed | suppressed (opted out; a reminder of an
    # instalment repaid, or a loan voided, before it was sent)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # How many of its claims lapsed unrecorded (counted when the next claim takes it over):
    # unlike attempts, not the gateway's failures recorded as retries.
    Column("lapses", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When the text was first allowed to go (a reminder queued in quiet hours: their end);
    # its retries are given up counting from then. Null on rows queued before it was kept:
    # their created_at.
    Column("not_before", DateTime(timezone=True), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # When a pending row may be sent; for a row being sent, when its claim lapses.
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("provider_id", Text, nullable=True),  # the gateway's id: opaque, as long as it is
    Column("last_error", Text, nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # When it failed (status failed): refused, given up, not delivered, or a number not to
    # text. Null on rows failed before notifications 0013.
    Column("failed_at", DateTime(timezone=True), nullable=True),
    # The id of the event that asked for the text: the cause of the events about it
    # (``sms.sent``, ``sms.delivered``, ``sms.failed``), emitted after that event's handling.
    Column("caused_by", String(256), nullable=True),
    # W3C trace context of the event that asked for the text, so that the dispatcher's call
    # and the sms.* events about it continue the order's trace.
    Column("trace_headers", JSONB, nullable=True),
    Index("sms_due", "next_attempt_at", postgresql_where=text("status IN ('pending', 'sending')")),
    # A hash index: receipts look an id up by equality, and it holds an id of any length
    # (a B-tree entry, 2704 bytes at most).
    Index("sms_provider", "provider_id", postgresql_using="hash"),
    # An order's texts and those to a number, newest first (GET /sms).
    Index("sms_order", "order_id", "created_at", "sms_id"),
    Index("sms_to", "to", "created_at", "sms_id"),
)

outbox, inbox = add_messaging_tables(metadata)
parked = add_parked_table(metadata)  # outcomes and loan events of orders not known yet

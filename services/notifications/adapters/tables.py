"""The notifications schema: who to reach for an order, and every SMS (one per dedup key)."""

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, func, text

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
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Index("sms_pending", "created_at", postgresql_where=text("status = 'pending'")),
)

outbox, inbox = add_messaging_tables(metadata)

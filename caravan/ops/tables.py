"""The ops schema: a record of every replay and redrive (when, what, by whom)."""

from sqlalchemy import BigInteger, Boolean, Column, DateTime, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "ops"
metadata = MetaData(schema=SCHEMA)

actions = Table(
    "actions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),  # replay | redrive
    Column("dry_run", Boolean, nullable=False),
    Column("detail", JSONB, nullable=False),
)

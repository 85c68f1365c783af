"""The auth schema: API tokens (only their SHA-256 is stored) and the audit trail."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

SCHEMA = "auth"
metadata = MetaData(schema=SCHEMA)

tokens = Table(
    "tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("hash", String(64), nullable=False, unique=True),  # hex SHA-256 of the token
    Column("scopes", ARRAY(String(32)), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # None: the token reaches every order (as every token did before 2026-12-06); else it is
    # bound: it reaches the orders it placed over HTTP and those of these sources.
    Column("sources", ARRAY(String(256)), nullable=True),
    # The client whose HTTP orders a bound token places (orders.placed_by) and reaches as its
    # own: None, its own name; another token's, to take its place (``tokens issue --client``:
    # a token replaced keeps its client's orders and keys).
    Column("client", String(64), nullable=True),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(128), nullable=False),  # a token's name, or the OS user of the CLI
    Column("action", String(64), nullable=False),  # e.g. lot.add, credit.set, replay, token.issue
    Column("target", String(256), nullable=False),  # what it acted on: lot id, buyer id, topic
    Column("before", JSONB(none_as_null=True), nullable=True),
    Column("after", JSONB(none_as_null=True), nullable=True),
    Column("detail", JSONB, nullable=False, server_default="{}"),
    Index("ix_audit_action_at", "action", "at"),
    # caravan audit --target, --actor, --since/--until, newest first (auth migration 0003).
    Index("ix_audit_target_at", "target", "at", "id"),
    Index("ix_audit_actor_at", "actor", "at", "id"),
    Index("ix_audit_at", "at", "id"),
    # Services append to it without the right to read it (caravan.db_roles.REVOKED): no
    # RETURNING of the new id, which PostgreSQL would refuse them as a read.
    implicit_returning=False,
)

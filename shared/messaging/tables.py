"""The outbox and inbox tables that every service keeps in its own schema."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

UNSENT = "sent_at IS NULL AND refused_at IS NULL"
"""The outbox rows the relay is to publish (the predicate of its index ``outbox_unsent``)."""


def add_messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Declare ``outbox`` and ``inbox`` in ``metadata`` (whose schema is the service's).

    An outbox row is unsent while ``sent_at`` is NULL; one Kafka refused for good also has
    ``refused_at`` and ``refusal`` (:mod:`shared.messaging.relay`): the relay leaves it be."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("topic", String(255), nullable=False),
        Column("key", LargeBinary, nullable=True),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        # Set aside by the relay, Kafka refusing the row for good, and why: left unsent.
        Column("refused_at", DateTime(timezone=True), nullable=True),
        Column("refusal", Text, nullable=True),
        # The relay's next rows; rows set aside have an index of their own (they would be
        # walked past by every batch of the relay, and are kept until operations act).
        Index("outbox_unsent", "id", postgresql_where=text(UNSENT)),
        Index("outbox_refused", "id", postgresql_where=text("refused_at IS NOT NULL")),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("key", String(600), primary_key=True),
        Column("topic", String(255), nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return outbox, inbox

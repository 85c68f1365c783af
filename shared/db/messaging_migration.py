"""Alembic operations for the outbox and inbox tables that every service schema holds
(declared in :mod:`shared.messaging.tables`), and for the events parked until their
order is placed (:mod:`shared.messaging.parking`)."""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db.migrate import refuse_losing


def create_messaging_tables(schema: str) -> None:
    op.create_table(
        "inbox",
        sa.Column("key", sa.String(length=600), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column(
            "handled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key"),
        schema=schema,
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "outbox_unsent",
        "outbox",
        ["id"],
        unique=False,
        schema=schema,
        postgresql_where=sa.text("sent_at IS NULL"),
    )


def drop_messaging_tables(schema: str) -> None:
    op.drop_index("outbox_unsent", table_name="outbox", schema=schema)
    op.drop_table("outbox", schema=schema)
    op.drop_table("inbox", schema=schema)


def create_parked_table(schema: str) -> None:
    """The table of events waiting for their order's ``order.placed``
    (:func:`shared.messaging.parking.add_parked_table`)."""
    op.create_table(
        "parked",
        sa.Column("key", sa.String(length=600), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "parked_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key"),
        schema=schema,
    )
    op.create_index("parked_order", "parked", ["order_id"], schema=schema)


def drop_parked_table(schema: str) -> None:
    """Refused while events are parked: each would never be handled."""
    refuse_losing(
        f"{schema}.parked",
        None,
        "the events parked until their order's order.placed comes, never to be handled",
        f"DELETE FROM {schema}.parked (or wait: each leaves once its order.placed comes)",
    )
    op.drop_index("parked_order", table_name="parked", schema=schema)
    op.drop_table("parked", schema=schema)


def add_outbox_refusals(schema: str) -> None:
    """When and why the relay set an outbox row aside, Kafka refusing it for good; the
    relay's index leaves such rows out, and they have one of their own."""
    op.add_column(
        "outbox", sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True), schema=schema
    )
    op.add_column("outbox", sa.Column("refusal", sa.Text(), nullable=True), schema=schema)
    _index_unsent(schema, "sent_at IS NULL AND refused_at IS NULL")  # tables.UNSENT, as of now
    op.create_index(
        "outbox_refused",
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("refused_at IS NOT NULL"),
    )


def drop_outbox_refusals(schema: str) -> None:
    """Refused while rows are set aside: unsent again, the older relay would stall on each."""
    refuse_losing(
        f"{schema}.outbox",
        "refused_at IS NOT NULL",
        "the outbox rows Kafka refused, set aside (unsent again, the older relay would stall"
        " on them)",
        f"DELETE FROM {schema}.outbox WHERE refused_at IS NOT NULL (or publish them again"
        " first: docs/guarantees.md, Transactional outbox)",
    )
    op.drop_index("outbox_refused", table_name="outbox", schema=schema)
    _index_unsent(schema, "sent_at IS NULL")
    op.drop_column("outbox", "refusal", schema=schema)
    op.drop_column("outbox", "refused_at", schema=schema)


def _index_unsent(schema: str, where: str) -> None:
    """The relay's index of the rows it is to publish, made again for ``where``."""
    op.drop_index("outbox_unsent", table_name="outbox", schema=schema)
    op.create_index(
        "outbox_unsent", "outbox", ["id"], schema=schema, postgresql_where=sa.text(where)
    )

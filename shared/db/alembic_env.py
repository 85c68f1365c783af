"""The body of every service's ``migrations/env.py``: online, async, one schema per service."""

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared.db.engine import async_engine
from shared.db.migrate import REFUSALS, refuse_ahead, refused

MIGRATION_LOCK = 0x0CA2A7A9


def run(metadata: MetaData) -> None:
    """Migrate ``metadata.schema`` to head, serialised across processes by an advisory lock."""
    schema = metadata.schema
    assert schema, "each service's metadata names its schema"
    url = context.config.get_main_option("sqlalchemy.url")
    assert url
    role = context.config.get_main_option("caravan_role")

    def do_run(connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        if role:  # the owner role (caravan/db_roles.py) then owns the schema and its tables
            connection.execute(text(f'SET LOCAL ROLE "{role}"'))
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
            on_version_apply=_applied,
        )
        # Under the lock: a newer version's revision, refused in one line (SchemaAhead).
        refuse_ahead(context.script, schema, context.get_context().get_current_heads())
        gathered = context.config.attributes.get(REFUSALS)
        with context.begin_transaction():
            try:
                context.run_migrations()
            except Exception as exc:
                if gathered:  # gone on past a refusal, a step failed: those before it said
                    raise refused(gathered, cut=True) from exc
                raise
            if gathered:  # raised in the transaction: what the steps did is undone
                raise refused(gathered)

    def _applied(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        # what shared.db.migrate.upgrade tells the operator it did
        if (applied := context.config.attributes.get("applied")) is not None:
            applied.append((", ".join(step.down_revision_ids), step.up_revision_id))

    async def main() -> None:
        engine = async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(do_run)
        await engine.dispose()

    asyncio.run(main())

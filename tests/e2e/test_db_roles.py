"""Each service connects as its own PostgreSQL role that reaches only its own schema; the
migrations ran as the owner role; the running system works with those roles."""

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from caravan import db_roles, system
from services import SERVICES
from shared.db.migrate import alembic_config, migrations_folder, upgrade
from tests.e2e.test_saga import RICH, order
from tests.harness import System, scratch_database, until


@asynccontextmanager
async def connected_as(caravan: System, service: str) -> AsyncIterator[AsyncConnection]:
    url = db_roles.service_database_url(caravan.infra.database_url, service)
    engine = create_async_engine(db_roles.asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def refused(conn: AsyncConnection, statement: str) -> str:
    """The error PostgreSQL answers ``statement`` with (the test fails if it succeeds)."""
    with pytest.raises(DBAPIError) as caught:
        await conn.execute(text(statement))
    await conn.rollback()
    return str(caught.value.orig)


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_reaches_only_its_own_schema(caravan: System, service: str) -> None:
    async with connected_as(caravan, service) as conn:
        assert await conn.scalar(text("select current_user")) == db_roles.service_role(service)
        # its own tables: read and write (inside a transaction that is rolled back)
        await conn.execute(text(f"select count(*) from {service}.outbox"))
        await conn.execute(
            text(f"insert into {service}.inbox (key, topic) values ('role-test', 'x')")
        )
        await conn.rollback()
        # everyone else's tables, and the operations schema: permission denied
        for other in [s for s in SERVICES if s != service] + ["ops"]:
            table = "ops.actions" if other == "ops" else f"{other}.outbox"
            error = await refused(conn, f"select * from {table} limit 1")
            assert f"permission denied for schema {other}" in error, error
        # no CREATE: not in its own schema, not in public, not a new schema
        error = await refused(conn, f"create table {service}.intruder (x int)")
        assert f"permission denied for schema {service}" in error, error
        error = await refused(conn, "create table public.intruder (x int)")
        assert "permission denied for schema public" in error, error
        error = await refused(conn, "create schema intruder")
        assert "permission denied for database" in error, error
        # auth: tokens are read, never written (no service mints a token); audit is appended
        await conn.execute(text("select count(*) from auth.tokens"))
        error = await refused(
            conn, "insert into auth.tokens (name, hash, scopes) values ('x', 'y', '{ops}')"
        )
        assert "permission denied for table tokens" in error, error
        error = await refused(conn, "update auth.tokens set revoked_at = null")
        assert "permission denied for table tokens" in error, error
        await conn.execute(
            text("insert into auth.audit (actor, action, target) values ('t', 'role-test', 'x')")
        )
        await conn.rollback()
        # ... and never read: it holds what every service's admins did (phones among it)
        error = await refused(conn, "select count(*) from auth.audit")
        assert "permission denied for table audit" in error, error


async def test_migrations_ran_as_the_owner_and_the_services_run_as_their_roles(
    caravan: System,
) -> None:
    owners = await caravan.sql(
        "select distinct schemaname, tableowner from pg_tables where schemaname = any(:s)",
        s=[*SERVICES, "ops"],
    )
    assert {owner for _schema, owner in owners} == {db_roles.OWNER}
    assert {schema for schema, _owner in owners} == {*SERVICES, "ops"}
    # The running service processes are connected, each as its own role only.
    req = order(RICH, {"T-PEPPER": 1})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"

    async def connected() -> dict[str, set[str]]:
        """Each service's database users, by the sessions it has now."""
        sessions = await caravan.sql(
            "select distinct application_name, usename::text from pg_stat_activity"
            " where application_name like 'caravan-%'"
        )
        users: dict[str, set[str]] = {}
        for app, user in sessions:
            users.setdefault(app.removeprefix("caravan-"), set()).add(user)
        return users

    # A session of every service: one whose connections a test before this one ended has
    # none until its next statement (the platform's, polling every 0.5 s, in a CI run).
    users = await until(
        connected, "a session of every service", ready=lambda u: set(SERVICES) <= set(u)
    )
    for service in SERVICES:
        assert users.get(service) == {db_roles.service_role(service)}, users


async def test_the_local_cluster_is_reached_over_its_socket_and_trusts_nobody(
    caravan: System,
) -> None:
    """The services use the project's cluster over its public unix socket (no TCP round
    trips), and that socket asks every role but the cluster's OS user for its password."""
    pg = caravan.infra.local_postgres
    assert pg is not None, "this test needs the project's own PostgreSQL"
    sessions = await caravan.sql(
        "select application_name, client_addr::text from pg_stat_activity"
        " where application_name like 'caravan-%'"
    )
    assert {app.removeprefix("caravan-") for app, _ in sessions} >= set(SERVICES)
    assert all(addr is None for _, addr in sessions), sessions  # None: a unix socket
    rules = await caravan.sql(
        "select type, user_name, auth_method from pg_hba_file_rules order by line_number"
    )
    assert [tuple(rule) for rule in rules] == [
        ("local", [pg.cluster_user], "peer"),
        ("local", ["all"], "scram-sha-256"),
        ("host", ["all"], "scram-sha-256"),
        ("host", ["all"], "scram-sha-256"),
    ]
    socket_url = make_url(db_roles.asyncpg_url(pg.url))
    assert socket_url.query["host"] == str(pg.socket_dir)
    for password in ("", "not-the-password"):
        engine = create_async_engine(socket_url.set(password=password), poolclass=NullPool)
        try:
            with pytest.raises(DBAPIError) as caught:
                async with engine.connect():
                    pass
            assert "password authentication failed" in str(caught.value.orig), caught.value
        finally:
            await engine.dispose()


async def test_shared_schemas_are_granted_as_listed_including_later_tables(
    caravan: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mechanism behind the ``auth`` schema: SELECT and INSERT only, on tables that exist
    at ``prepare`` and (by the owner's default privileges) on tables made later."""
    schema = "auth_probe"
    monkeypatch.setattr(db_roles, "SHARED_SCHEMAS", {schema: "SELECT, INSERT"})
    admin = caravan.infra.database_url
    urls = {s: db_roles.service_database_url(admin, s) for s in SERVICES}
    owner_ddl = f"set local role {db_roles.OWNER}; create schema {schema}; "
    await _admin_sql(admin, owner_ddl + f"create table {schema}.early (id serial, v int)")
    try:
        await db_roles.grant_services(admin, urls)
        await _admin_sql(
            admin, f"set local role {db_roles.OWNER}; create table {schema}.late (id serial, v int)"
        )
        async with connected_as(caravan, "payments") as conn:
            for table in ("early", "late"):
                await conn.execute(text(f"insert into {schema}.{table} (v) values (1)"))
                assert await conn.scalar(text(f"select count(*) from {schema}.{table}")) == 1
                error = await refused(conn, f"update {schema}.{table} set v = 2")
                assert f"permission denied for table {table}" in error, error
                error = await refused(conn, f"delete from {schema}.{table}")
                assert f"permission denied for table {table}" in error, error
    finally:
        await _admin_sql(admin, f"drop schema {schema} cascade")


async def test_prepare_hands_schemas_made_by_the_admin_to_the_owner(
    infrastructure: system.Infrastructure,
) -> None:
    """Databases migrated before the owner role existed: their schemas, tables, sequences
    and functions pass to the owner, which can then migrate them (here: all the way down)."""
    folder = migrations_folder("payments")
    async with scratch_database(infrastructure.database_url, "caravan_adopt") as url:
        await asyncio.to_thread(upgrade, folder, db_roles.asyncpg_url(url))  # as the admin
        await db_roles.ensure_owner(url)
        engine = create_async_engine(db_roles.asyncpg_url(url), poolclass=NullPool)
        async with engine.connect() as conn:
            owners = await conn.execute(
                text(
                    "select pg_get_userbyid(c.relowner) from pg_class c"
                    " where c.relnamespace = 'payments'::regnamespace"
                    " union select pg_get_userbyid(p.proowner) from pg_proc p"
                    " where p.pronamespace = 'payments'::regnamespace"
                    " union select pg_get_userbyid(n.nspowner) from pg_namespace n"
                    " where n.nspname = 'payments'"
                )
            )
            assert {row[0] for row in owners} == {db_roles.OWNER}
        await engine.dispose()
        cfg = alembic_config(folder, db_roles.asyncpg_url(url))
        cfg.set_main_option("caravan_role", db_roles.OWNER)
        await asyncio.to_thread(command.downgrade, cfg, "base")


@pytest.mark.parametrize(
    "password",
    [
        "p",
        "caravan-dev-orders",
        "it's%20a \\ pass",
        # SASLprep: a full-width p, a no-break space, a soft hyphen (mapped to nothing)
        "\uff50\u00e4ss\u00a0w\u00f6rd\u00ad",
        # right-to-left, then a Latin letter: SASLprep refuses it, so it is hashed as it is
        "\u0627\u0644a",
    ],
)
async def test_the_verifier_prepare_sends_is_the_one_postgresql_makes_of_the_password(
    infrastructure: system.Infrastructure, password: str
) -> None:
    """``prepare`` sends a service role's SCRAM-SHA-256 verifier, not its password: it must be
    the one the server makes of that password (with the same salt and iterations), or the
    service could not log in."""
    engine = create_async_engine(db_roles.asyncpg_url(infrastructure.database_url))
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("set local password_encryption = 'scram-sha-256'")
            create = await conn.scalar(
                text(
                    "select format('create role caravan_scram_probe password %L', cast(:p as text))"
                ),
                {"p": password},
            )
            await conn.exec_driver_sql(str(create))
            stored = str(
                await conn.scalar(
                    text("select rolpassword from pg_authid where rolname = 'caravan_scram_probe'")
                )
            )
            await conn.rollback()
    finally:
        await engine.dispose()
    iterations, salt = stored.removeprefix("SCRAM-SHA-256$").split("$")[0].split(":")
    made = db_roles.scram_verifier(password, base64.b64decode(salt), int(iterations))
    assert made == stored


async def _admin_sql(url: str, statements: str) -> None:
    engine = create_async_engine(db_roles.asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in statements.split("; "):
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()

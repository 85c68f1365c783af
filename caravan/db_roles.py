"""PostgreSQL roles: one owner of every schema, and one login role per service.

- ``caravan_owner`` (no login) owns every schema the migrations manage; ``caravan prepare``
  runs the migrations as that role (``SET ROLE`` from the admin connection).
- Each service logs in as its own role (``caravan_<service>`` by default; the user name of
  its URL, see :func:`service_database_url`) that may use only its own schema: USAGE on it,
  SELECT/INSERT/UPDATE/DELETE on its tables, USAGE/SELECT/UPDATE on its sequences, no CREATE
  anywhere, nothing on the other services' schemas; and on each schema of
  :data:`SHARED_SCHEMAS` (when it exists) only the privileges listed there.
- Default privileges of the owner give the same grants on tables created by later
  migrations; :func:`grant_services` re-applies everything at each ``prepare`` anyway.

A service role's password is never sent to the server: ``prepare`` sends its SCRAM-SHA-256
verifier (:func:`scram_verifier`), as psql's ``\\password`` does, so the password is in no
statement that PostgreSQL may log (``log_statement=ddl``, or a failing statement at
``log_min_error_statement``) and in no error SQLAlchemy raises.

Everything here is idempotent and runs with the admin URL (a superuser, or a role with
CREATEROLE that may grant the owner role to itself).
"""

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from shared.db.engine import async_engine
from shared.settings import DEV_SECRET_PREFIX, asyncpg_url, secret_from_env

OWNER = "caravan_owner"
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT, UPDATE"
# Schemas every service may reach, with the table privileges it gets there (sequences: USAGE).
SHARED_SCHEMAS: dict[str, str] = {"auth": "SELECT, INSERT"}
# What services may not do to some tables of those schemas: insert a token (a service that
# could would give itself, or anyone, every scope), or read the audit trail, which they only
# append to and which holds what every service's admins did (buyers' phones opted out,
# sellers' phones seeded, credit limits): no service reads it, the CLI does as the admin.
REVOKED: dict[str, str] = {"auth.tokens": "INSERT, UPDATE, DELETE", "auth.audit": "SELECT"}

_ENSURE_OWNER = (
    f"DO $$ BEGIN CREATE ROLE {OWNER} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    f"""DO $$ BEGIN
  IF NOT pg_has_role(current_user, '{OWNER}', 'MEMBER') THEN
    EXECUTE format('GRANT {OWNER} TO %I', current_user);
  END IF;
  EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO {OWNER}', current_database());
END $$""",
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
)

# Schemas made by migrations before the owner role existed (they hold an alembic_version
# table) pass to the owner, with everything in them.
_ADOPT_SCHEMAS = f"""
DO $$
DECLARE s record; r record;
BEGIN
  FOR s IN SELECT n.oid, n.nspname FROM pg_namespace n
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'alembic_version'
           WHERE n.nspowner <> '{OWNER}'::regrole LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO {OWNER}', s.nspname);
    FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
             WHERE c.relnamespace = s.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype IN ('a', 'i')) LOOP
      EXECUTE format('ALTER TABLE %s OWNER TO {OWNER}', r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p WHERE p.pronamespace = s.oid LOOP
      EXECUTE format('ALTER FUNCTION %s OWNER TO {OWNER}', r.name);
    END LOOP;
  END LOOP;
END $$;
"""


def service_role(service: str) -> str:
    return f"caravan_{service}"


def service_database_url(
    admin_url: str, service: str, environ: dict[str, str] | None = None
) -> str:
    """The URL ``service`` connects with: ``CARAVAN_DATABASE_URL_<SERVICE>`` (or its ``_FILE``)
    when set, else the admin URL's server and database with the service's role and its
    development password (which production settings refuse)."""
    given = secret_from_env(f"CARAVAN_DATABASE_URL_{service.upper()}", environ)
    if given:
        return given
    url = make_url(admin_url).set(
        username=service_role(service), password=f"{DEV_SECRET_PREFIX}{service}"
    )
    return url.render_as_string(hide_password=False)


async def ensure_owner(admin_url: str) -> None:
    """Create the owner role and hand it the schemas that migrations made before it."""
    engine = async_engine(admin_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in (*_ENSURE_OWNER, _ADOPT_SCHEMAS):
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def grant_services(admin_url: str, service_urls: dict[str, str]) -> None:
    """Create (or update) each service's login role from its URL and grant it its schema."""
    engine = async_engine(admin_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            schemas = set((await conn.scalars(text("SELECT nspname FROM pg_namespace"))).all())
            for service, url in service_urls.items():
                parsed = make_url(url)
                role, password = parsed.username, parsed.password
                if not role or not password:
                    raise ValueError(f"the database URL of {service} needs a user and password")
                await _ensure_login(conn, role, password)
                if service in schemas:
                    await _grant_schema(conn, role, service, TABLE_PRIVILEGES)
                for shared, privileges in SHARED_SCHEMAS.items():
                    if shared in schemas:
                        await _grant_schema(conn, role, shared, privileges, sequences="USAGE")
                for table, revoked in REVOKED.items():
                    if await conn.scalar(text("SELECT to_regclass(:t)"), {"t": table}):
                        await _execute(conn, f"REVOKE {revoked} ON {table} FROM %I", role)
    finally:
        await engine.dispose()


async def _ensure_login(conn: AsyncConnection, role: str, password: str) -> None:
    await _execute(
        conn,
        "DO $$ BEGIN CREATE ROLE %I; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        role,
    )
    await _execute(
        conn,
        "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        " PASSWORD %L",
        role,
        scram_verifier(password),
    )
    await _execute(conn, "GRANT CONNECT ON DATABASE %I TO %I", await _database(conn), role)


SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def scram_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802 and 7677, as
    libpq's ``PQencryptPasswordConn`` makes it): given as a role's ``PASSWORD``, the server
    keeps it as it is, and the password itself never leaves this process. A fresh random
    salt each time unless ``salt`` is given."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = [base64.b64encode(part).decode() for part in (salt, stored_key, server_key)]
    return f"SCRAM-SHA-256${iterations}:{b64[0]}${b64[1]}:{b64[2]}"


_PROHIBITED = (
    stringprep.in_table_a1,  # unassigned code points
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def _saslprep(password: str) -> str:
    """``password`` as PostgreSQL hashes it (RFC 4013 SASLprep, as its ``pg_saslprep``):
    non-ASCII spaces as spaces, characters mapped to nothing dropped, then NFKC. PostgreSQL
    checks the prohibited characters and the bidirectional rule on the mapped string, before
    normalising; a password they refuse (or that maps to nothing) is hashed as it is."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    rtl = [stringprep.in_table_d1(c) for c in mapped]
    if (
        not mapped
        or any(check(c) for c in mapped for check in _PROHIBITED)
        or (any(rtl) and (not (rtl[0] and rtl[-1]) or any(map(stringprep.in_table_d2, mapped))))
    ):
        return password
    return unicodedata.normalize("NFKC", mapped)


async def _grant_schema(
    conn: AsyncConnection,
    role: str,
    schema: str,
    tables: str,
    sequences: str = SEQUENCE_PRIVILEGES,
) -> None:
    await _execute(conn, "GRANT USAGE ON SCHEMA %I TO %I", schema, role)
    await _execute(conn, f"GRANT {tables} ON ALL TABLES IN SCHEMA %I TO %I", schema, role)
    await _execute(conn, f"GRANT {sequences} ON ALL SEQUENCES IN SCHEMA %I TO %I", schema, role)
    for kind, privileges in (("TABLES", tables), ("SEQUENCES", sequences)):
        await _execute(
            conn,
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA %I"
            f" GRANT {privileges} ON {kind} TO %I",
            schema,
            role,
        )


async def _execute(conn: AsyncConnection, template: str, *args: str) -> None:
    """Run ``template`` with its ``%I`` / ``%L`` filled in by the server's ``format()``, so
    that names and passwords are quoted by PostgreSQL itself."""
    params = {"t": template, **{f"a{i}": arg for i, arg in enumerate(args)}}
    casts = ", ".join(f"CAST(:{name} AS text)" for name in params)
    statement = await conn.scalar(text(f"SELECT format({casts})"), params)
    await conn.exec_driver_sql(str(statement))


async def _database(conn: AsyncConnection) -> str:
    return str(await conn.scalar(text("SELECT current_database()")))


__all__ = [
    "OWNER",
    "REVOKED",
    "SHARED_SCHEMAS",
    "asyncpg_url",
    "ensure_owner",
    "grant_services",
    "scram_verifier",
    "service_database_url",
    "service_role",
]

"""What ``caravan prepare`` sends PostgreSQL for the services' roles (caravan/db_roles.py):
never a role's password, which the server may log with the statement (log_statement=ddl, or
a failing statement at log_min_error_statement) and SQLAlchemy would put in its error; the
verifier being the one PostgreSQL makes is proven on the server (e2e test_db_roles.py)."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from caravan import db_roles

ADMIN = "postgresql://admin:admin-pw@db:5432/caravan"
PASSWORD = "pay-Real-pw-0123"


class RecordingConnection:
    """The statements and parameters sent, with ``format()`` done here as the server would."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def scalar(self, statement: Any, params: dict[str, str] | None = None) -> Any:
        self.sent.append(f"{statement} {params}")
        if params and "t" in params:
            args = iter(params[k] for k in sorted(params) if k != "t")
            quote = {"%I": '"{}"', "%L": "'{}'"}
            return re.sub(r"%[IL]", lambda m: quote[m.group()].format(next(args)), params["t"])
        return "caravan" if "current_database" in str(statement) else None

    async def scalars(self, statement: Any) -> Any:
        self.sent.append(str(statement))
        return self

    def all(self) -> list[str]:
        return ["payments", "auth"]

    async def exec_driver_sql(self, statement: str) -> None:
        self.sent.append(statement)


class RecordingEngine:
    def __init__(self) -> None:
        self.conn = RecordingConnection()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[RecordingConnection]:
        yield self.conn

    async def dispose(self) -> None:
        pass


async def test_prepare_sends_a_roles_verifier_never_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = RecordingEngine()
    monkeypatch.setattr(db_roles, "async_engine", lambda *args, **kwargs: engine)
    url = f"postgresql://caravan_payments:{PASSWORD}@db:5432/caravan"
    await db_roles.grant_services(ADMIN, {"payments": url})
    [alter] = [s for s in engine.conn.sent if s.startswith('ALTER ROLE "caravan_payments"')]
    assert re.search(r" PASSWORD 'SCRAM-SHA-256\$4096:[\w+/=]+\$[\w+/=]+:[\w+/=]+'$", alter)
    assert not [s for s in engine.conn.sent if PASSWORD in s]


def test_each_verifier_has_its_own_salt() -> None:
    assert db_roles.scram_verifier(PASSWORD) != db_roles.scram_verifier(PASSWORD)
    salt = b"0123456789abcdef"
    assert db_roles.scram_verifier(PASSWORD, salt) == db_roles.scram_verifier(PASSWORD, salt)

"""Which faults are retried (transient) and which are not: a database that is shutting down
or restarting is transient; a bug is not (and deciding must never raise)."""

import asyncpg
import pytest

from shared.db import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ],
)
def test_database_and_network_faults_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("x"), TypeError("bug")])
def test_bugs_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)

"""Which faults are retried (transient) and which are not."""

import asyncpg

from shared.db import is_transient


def test_database_and_network_faults_are_transient() -> None:
    assert is_transient(asyncpg.CannotConnectNowError("the database system is shutting down"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())


def test_other_faults_are_not_transient() -> None:
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(KeyError("missing"))

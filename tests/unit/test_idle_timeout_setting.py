"""How long a service's transaction may sit idle before PostgreSQL ends it
(``CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS``): 0 (never) or longer than the outbox
relay's wait for Kafka's answers and a margin. The relay holds its batch's transaction open
while Kafka answers (its producer's request timeout): a shorter timeout ended every batch that
waited on a slow Kafka, which was then sent again and again. A service refuses one at start,
in one line naming both."""

import pytest

from shared.messaging.relay import make_producer
from shared.settings import (
    IDLE_MARGIN_SECONDS,
    RELAY_KAFKA_WAIT_SECONDS,
    Settings,
    SettingsRefused,
    check_settings,
)

ANY_DB = "postgresql://caravan@127.0.0.1:1/caravan"  # never connected to


@pytest.mark.parametrize("seconds", [1, 3, 30, 40])
def test_a_service_refuses_a_timeout_the_relay_s_wait_for_kafka_would_outlast(
    seconds: float,
) -> None:
    settings = Settings(database_url=ANY_DB, db_idle_in_transaction_timeout_seconds=seconds)
    with pytest.raises(SettingsRefused) as refused:
        check_settings(settings)
    assert refused.value.refusals == [
        f"CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS ({seconds} s) must be 0 (never) or"
        " over 40 s: the outbox relay's transaction waits up to its producer's request timeout"
        " (30 s) for Kafka's answers, and one ended so is sent again and again"
    ]


@pytest.mark.parametrize("seconds", [0, 40.5, 60, 3600])
def test_never_or_a_timeout_past_the_relay_s_wait_is_taken(seconds: float) -> None:
    check_settings(Settings(database_url=ANY_DB, db_idle_in_transaction_timeout_seconds=seconds))


def test_the_default_is_taken() -> None:
    check_settings(Settings(database_url=ANY_DB))


async def test_the_bound_is_the_relay_producer_s_request_timeout() -> None:
    producer = make_producer("127.0.0.1:1", "test")  # not started: nothing is reached
    assert producer._request_timeout_ms == RELAY_KAFKA_WAIT_SECONDS * 1000
    assert RELAY_KAFKA_WAIT_SECONDS + IDLE_MARGIN_SECONDS == 40


@pytest.mark.parametrize(("answer", "idle"), [(1, 60), (70, 60), (50, 41)])
def test_a_service_refuses_a_statement_bound_a_lock_wait_may_outlast(
    answer: float, idle: float
) -> None:
    """A statement may wait on a lock whose holder sits idle until the idle timeout ends its
    transaction (CARAVAN_DB_ANSWER_TIMEOUT_SECONDS, shared.db.engine.Database): a bound no
    longer than that and the margin would give up a legitimate wait as PostgreSQL away."""
    settings = Settings(
        database_url=ANY_DB,
        db_answer_timeout_seconds=answer,
        db_idle_in_transaction_timeout_seconds=idle,
    )
    with pytest.raises(SettingsRefused) as refused:
        check_settings(settings)
    assert refused.value.refusals == [
        f"CARAVAN_DB_ANSWER_TIMEOUT_SECONDS ({answer} s) must be 0 (for ever) or over"
        f" {idle + 10:g} s: a statement may wait on a lock whose holder sits idle until"
        f" CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS ({idle} s) ends it"
    ]


@pytest.mark.parametrize(("answer", "idle"), [(0, 60), (70.5, 60), (5, 0), (120, 60)])
def test_for_ever_or_a_bound_past_the_idle_timeout_is_taken(answer: float, idle: float) -> None:
    check_settings(
        Settings(
            database_url=ANY_DB,
            db_answer_timeout_seconds=answer,
            db_idle_in_transaction_timeout_seconds=idle,
        )
    )


@pytest.mark.parametrize(("idle", "answer"), [(60, 120), (3600, 7200), (0, 0)])
def test_unset_a_statement_waits_twice_the_idle_timeout(idle: float, answer: float) -> None:
    settings = Settings(database_url=ANY_DB, db_idle_in_transaction_timeout_seconds=idle)
    check_settings(settings)
    assert settings.answer_timeout_seconds() == answer

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

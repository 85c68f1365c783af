"""``CARAVAN_CONSUMER_SESSION_TIMEOUT_MS`` reaches each service's Kafka consumer: how long its
group waits for a member killed or frozen before handing its partitions to the others. It was
aiokafka's 10 s, fixed, whatever a deployment (or the tests' broker, whose least is 6 s)
allowed; a heartbeat is sent at least three times within it."""

import pytest

from services.inventory.bootstrap import bootstrap
from shared.settings import Settings

URL = "postgresql://caravan:x@127.0.0.1:1/caravan"  # composing connects to nothing


def consumer_args(settings: Settings) -> dict[str, object]:
    """What the service composed from ``settings`` gives aiokafka's consumer."""
    service = bootstrap(settings)
    service.consumer.attach(service.broker)
    args: dict[str, object] = service.consumer.subscriber._connection_args
    return args


async def test_the_session_timeout_set_is_the_consumers_and_a_third_of_it_its_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARAVAN_CONSUMER_SESSION_TIMEOUT_MS", "6000")
    args = consumer_args(Settings(DATABASE_URL=URL))
    assert (args["session_timeout_ms"], args["heartbeat_interval_ms"]) == (6000, 2000)


async def test_unset_it_is_kafkas_own_10_s_and_3_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARAVAN_CONSUMER_SESSION_TIMEOUT_MS", raising=False)
    args = consumer_args(Settings(DATABASE_URL=URL))
    assert (args["session_timeout_ms"], args["heartbeat_interval_ms"]) == (10_000, 3000)

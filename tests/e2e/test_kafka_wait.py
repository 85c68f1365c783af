"""A service started while Kafka cannot be reached goes on once Kafka answers: its relay's
producer and its consumer start, and it says it started (``tests/unit/
test_service_waits_for_kafka.py``: it waits, and stops when asked to meanwhile).

Kafka "comes up" as a forwarder to the session's broker opening on the address the service
was given: the clients bootstrap through it, then reach the broker at the address it
advertises."""

import asyncio
import logging

import pytest

from caravan import system
from services.inventory.bootstrap import bootstrap
from shared.logs import FAULTS
from shared.messaging.relay import KAFKA_AWAY
from shared.settings import Settings
from tests.harness import Heard, forwarder, free_port


async def test_a_service_waiting_for_kafka_goes_on_once_it_answers(
    infrastructure: system.Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    waiting, started = Heard("waiting for Kafka"), Heard("inventory started")
    back = Heard("Kafka answers again")  # the retried fault's end (kafka_answers)
    waiting.addFilter(FAULTS)  # as a service's log handler says a retried fault's lines
    runtime = logging.getLogger("shared.runtime")
    infra = infrastructure
    await system.prepare(infra.kafka_bootstrap, infra.database_url)
    port = free_port()
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{port}", database_url=infra.database_url
    )
    service = bootstrap(settings)
    service.http_port = None  # no HTTP API: not what is tested, and no port to share
    stop = asyncio.Event()
    kafka_host, kafka_port = infra.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    with caplog.at_level(logging.INFO, logger="shared.runtime"):
        for heard in (waiting, started, back):
            runtime.addHandler(heard)
        serving = asyncio.create_task(service.serve(stop))
        try:
            await asyncio.wait_for(waiting.said.wait(), 10)
            server = await asyncio.start_server(
                forwarder(kafka_host, int(kafka_port)), "127.0.0.1", port
            )
            async with server:
                await asyncio.wait_for(started.said.wait(), 60)
                assert back.said.is_set()
                assert service.broker.running
                assert not serving.done()
        finally:
            stop.set()
            await asyncio.wait_for(serving, 30)
            for heard in (waiting, started, back):
                runtime.removeHandler(heard)
            FAULTS.over(KAFKA_AWAY)

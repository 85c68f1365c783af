"""A service started while Kafka cannot be reached waits for it, a one-line warning a try,
serves its HTTP API meanwhile, and stops cleanly when asked to (``tests/e2e/test_kafka_wait.py``:
and goes on once Kafka answers). It exited with aiokafka's KafkaConnectionError, and
``caravan up``, restarting it, stopped everything after five exits within a minute (it now
restarts with backoff and stops nothing, caravan/system.py)."""

import asyncio
import logging

import httpx
import pytest
from aiokafka import errors

from services.inventory.bootstrap import bootstrap
from shared import runtime
from shared.settings import Settings
from tests.harness import free_port, until
from tests.unit.conftest import Clock, said


async def _down(port: int) -> list[str] | None:
    """What the service's /healthz says is down, or None while nothing listens on its port."""
    try:
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
    except httpx.ConnectError:
        return None
    return list(health.json()["down"])


async def test_a_service_waits_for_kafka_and_stops_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        database_url="postgresql://caravan:secret@127.0.0.1:1/caravan",
    )
    service = bootstrap(settings)
    service.http_port = port = free_port()
    stop = asyncio.Event()

    def waits() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "waiting for Kafka" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="shared.runtime"):
        serving = asyncio.create_task(service.serve(stop))
        # Tries at 0, 0.5 and 1.5 s (later on a loaded machine): three warnings, still serving.
        await until(lambda: serving.done() or len(waits()) >= 3, "three tries", timeout=60)
        assert not serving.done(), serving.exception()
        # Its HTTP API answers meanwhile (here 503: no PostgreSQL either); it was not started
        # until Kafka answered, so a storefront's orders were refused a connection.
        down = await until(lambda: _down(port), "its HTTP API", 60, ready=lambda d: d is not None)
        assert down == ["database"], down
        assert not serving.done(), serving.exception()
        stop.set()
        await asyncio.wait_for(serving, 60)
    assert len(waits()) >= 3, [r.getMessage() for r in caplog.records]
    assert {(r.levelname, r.exc_info) for r in waits()} == {("WARNING", None)}
    assert "KafkaConnectionError" in waits()[0].getMessage()
    assert service.relay.producer._closed


async def test_waiting_for_kafka_is_one_warning_then_a_line_when_it_answers(
    caplog: pytest.LogCaptureFixture, faults: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try's warning was said (the relay's producer's and the consumer's, every 10 s at
    most once the backoff grew: twelve a minute, for as long as Kafka stayed away): now the
    relay's one fault, Kafka away, said once (then once a minute), and a client that starts
    ends it in one line."""
    tries = 0

    async def start() -> None:
        nonlocal tries
        tries += 1
        faults.now += 10
        if tries <= 5:
            raise errors.KafkaConnectionError("Unable to bootstrap")

    monkeypatch.setattr(runtime, "exponential_step", lambda *_, **__: 0.0)
    await runtime._waiting_for_kafka("inventory: consumer", start)
    assert tries == 6
    assert said(caplog, "shared.runtime") == [
        (
            "WARNING",
            "inventory: consumer waiting for Kafka, trying again in 0.0 s:"
            " KafkaConnectionError('Unable to bootstrap')",
        ),
        (
            "INFO",
            "Kafka answers again, 50 s after it was first found away"
            " (4 warnings of it not logged since the last that was)",
        ),
    ]

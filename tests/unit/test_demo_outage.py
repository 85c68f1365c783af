"""``caravan demo`` in a Kafka outage: its one red line, and nothing after it. It printed
``Unclosed AIOKafkaConsumer`` too: the Kafka clients it had made were left open when one of
them failed to start (here: a port nothing listens on)."""

import asyncio
import gc
import warnings

import pytest
from aiokafka.errors import KafkaConnectionError

from caravan.demo import run_demo
from tests.harness import free_port
from tests.unit.test_demo_seed import seed


def test_the_demo_that_cannot_reach_kafka_closes_the_clients_it_made() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KafkaConnectionError):
            asyncio.run(run_demo(bootstrap, seed(), count=1, timeout=1.0))
        gc.collect()
    assert [str(w.message).split(" <")[0] for w in caught if "Unclosed" in str(w.message)] == []

"""A consumer's offsets commit while its group's coordinator cannot be found
(shared/messaging/consumer.py, ``HandledOffsets``): aiokafka's commit waits for a
coordinator rather than fail.

A rebalance begins (a second member joins) while the consumer has handled records it has not
committed; it commits them as its partitions are revoked, and the broker stops at that
moment. The commit, in aiokafka's coordination task, waits; asked to stop then, the consumer
waited for that task, whose commit went on trying for as long as the process lived: once the
consumer closes, aiokafka's wait for a coordinator returns at once, finding none, and its
commit tries again every 100 ms without end. A supervisor kills the service after 15 s.
Now a commit unanswered within ``COMMIT_SECONDS`` fails, Kafka away (its warning said as
the relay's), and the stop goes on."""

import asyncio
import gc
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator

from caravan import system
from caravan.infra.kafka import LocalKafka
from services.inventory.bootstrap import bootstrap
from shared.messaging.admin import ensure_topics
from shared.messaging.consumer import AiokafkaUnknown, HandledOffsets
from shared.settings import Settings
from shared.topics import Topic
from tests.conftest import own_port
from tests.harness import freeze, sent

OWN_KAFKA_PORT = own_port("kafka", __name__)  # a broker of the test's own, to stop
TOPIC = Topic.ORDER_EVENTS.value
GROUP = "caravan-test-coordinator-away"


async def test_a_consumer_stops_in_time_when_its_revoking_commit_finds_no_coordinator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = LocalKafka(tmp_path / "kafka", first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    consumers: list[AIOKafkaConsumer] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await ensure_topics(bootstrap, partitions=1)
        await sent(bootstrap, TOPIC, [b"handled, not committed"])
        offsets = HandledOffsets(interval=60)  # nothing committed but by the revoke
        revoking = asyncio.Event()
        revoked = offsets.revoked

        async def broker_gone_then_revoked(partitions: Iterable[TopicPartition]) -> None:
            partitions = list(partitions)
            if not (partitions and offsets.pending):  # the first join's (none revoked)
                return await revoked(partitions)
            await asyncio.to_thread(kafka.stop)  # the coordinator away at that moment
            committing = asyncio.ensure_future(revoked(partitions))
            await asyncio.sleep(0)  # it takes what it commits, and asks Kafka
            revoking.set()
            await committing

        offsets.revoked = broker_gone_then_revoked  # type: ignore[method-assign]
        first = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumers.append(first)
        first.subscribe([TOPIC], listener=offsets.listener())
        await first.start()
        records = await fetched(first)
        async with offsets.handling(first, records):
            pass
        assert offsets.pending
        second = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=GROUP)
        consumers.append(second)
        tasks.append(asyncio.create_task(second.start()))
        await asyncio.wait_for(revoking.wait(), 60)
        began = time.monotonic()
        await asyncio.wait_for(offsets.close(), 30)  # as the service's stop does, then:
        tasks.append(asyncio.create_task(first.stop()))
        done, _ = await asyncio.wait([tasks[-1]], timeout=30)
        took = time.monotonic() - began
        assert done, f"the consumer's stop still waits after {took:.0f} s"
        assert took < 15, took  # what its supervisor allows (tests/unit/test_stop_budget.py)
        warned = [r.getMessage() for r in caplog.records if r.name == "shared.messaging.consumer"]
        assert any("committing offsets failed (KafkaTimeoutError" in w for w in warned), warned
    finally:
        for task in tasks:
            task.cancel()
        for consumer in consumers:
            tasks.append(asyncio.create_task(consumer.stop()))
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await asyncio.to_thread(kafka.stop)


async def test_a_commit_given_up_whose_request_fails_later_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka sends a commit's request shielded, in a task of its own: a commit given up
    (unanswered within ``COMMIT_SECONDS``) leaves it going on, and its failure, once Kafka
    answered or went away, was an error no one retrieved, logged at ERROR by asyncio ('Task
    exception was never retrieved ... GroupCoordinator._do_commit_offsets()'). Here the
    broker is frozen (SIGSTOP) while the request is on its way, then killed."""
    kafka = LocalKafka(tmp_path / "kafka", first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    consumer: AIOKafkaConsumer | None = None
    offsets = HandledOffsets(interval=60, commit_seconds=1.0)  # the test commits
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await ensure_topics(bootstrap, partitions=1)
        await sent(bootstrap, TOPIC, [b"handled, not committed"])
        consumer = AIOKafkaConsumer(
            TOPIC,
            bootstrap_servers=bootstrap,
            group_id=GROUP + "-late",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        records = await fetched(consumer)
        async with offsets.handling(consumer, records):
            pass
        pid = kafka.pid(0)
        assert pid is not None
        await freeze(pid)  # the request is sent, and not answered
        caplog.set_level(logging.WARNING)
        assert await offsets.commit() is not None  # given up
        await asyncio.to_thread(kafka.kill, 0)  # its connection closes: the request fails
        late = "a commit of offsets given up failed later"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            late in r.getMessage() for r in caplog.records
        ):
            await asyncio.sleep(0.1)
            gc.collect()  # an error no one retrieved is logged as its task is collected
        gc.collect()
        said = [(r.name, r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
        ours = [s for s in said if s[0] in ("asyncio", "shared.messaging.consumer")]
        assert ours == [
            ("shared.messaging.consumer", "WARNING", "committing offsets failed"),
            ("shared.messaging.consumer", "WARNING", late),
        ], said
    finally:
        if offsets.task is not None:  # its loop would commit (and fail) 60 s on, in a later test
            offsets.task.cancel()
        if consumer is not None:
            await asyncio.wait([asyncio.create_task(consumer.stop())], timeout=10)
        await asyncio.to_thread(kafka.stop)


async def test_a_service_on_an_aiokafka_without_the_commit_it_wraps_does_not_start(
    infrastructure: system.Infrastructure, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aiokafka whose GroupCoordinator has no ``_do_commit_offsets`` (a later version
    renaming it): the service started, its commits unwrapped, so sent out of order after one
    given up and a late failure asyncio's error, and nothing said. Now its start is refused
    once its consumer has started, naming the version and what is missing."""
    infra = infrastructure
    await system.prepare(infra.kafka_bootstrap, infra.database_url)
    monkeypatch.delattr(GroupCoordinator, "_do_commit_offsets")
    settings = Settings(
        kafka_bootstrap_servers=infra.kafka_bootstrap, database_url=infra.database_url
    )
    service = bootstrap(settings)
    service.http_port = None  # no HTTP API: not what is tested, and no port to share
    missing = "its consumer's GroupCoordinator has no _do_commit_offsets"
    with pytest.raises(
        AiokafkaUnknown, match=rf"^aiokafka [\d.]+: {missing}, which HandledOffsets"
    ):
        await asyncio.wait_for(service.serve(asyncio.Event()), 60)


async def fetched(consumer: AIOKafkaConsumer) -> list[ConsumerRecord]:
    """The first records ``consumer`` fetches (it waits for some)."""
    records: list[ConsumerRecord] = []
    while not records:
        batches = await consumer.getmany(timeout_ms=1000)
        records = [r for rs in batches.values() for r in rs]
    return records

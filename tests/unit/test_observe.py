"""The samples behind ``/metrics`` and ``/healthz`` (shared/observe.py): the consumer-lag
sample, which tells ``/healthz`` that Kafka answers, goes on while a PostgreSQL round hangs
(it ran after the outbox's, so a pool wait in a failover made Kafka look silent), a topic
the service reads that is missing is said as such, not as Kafka not answering, and a
partition whose records wait with none handled is said stalled."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import TopicPartition, errors
from prometheus_client import REGISTRY
from sqlalchemy import MetaData

from shared import observe
from shared.http import KafkaContact
from shared.logs import FAULT
from shared.loop_lag import LoopLag
from shared.messaging import kafka_admin
from shared.messaging.consumer import HandledOffsets
from shared.messaging.relay import KAFKA_AWAY
from shared.runtime import Service
from shared.settings import Settings
from shared.stall import Stalled, Stalls
from shared.topics import Topic
from tests.unit.conftest import Clock, Coordinator, kafka_away_a_minute, said
from tests.unit.test_healthz import health


def fake_kafka(
    monkeypatch: pytest.MonkeyPatch,
    missing: frozenset[str] = frozenset(),
    coordinator: Coordinator | None = None,
) -> list[str]:
    """A cluster that answers each offsets request (a lag of 2) but for the ``missing``
    topics, and describes the group as ``coordinator`` does (with one member by default);
    returns the topics asked about, in order."""
    asked: list[str] = []

    @contextlib.asynccontextmanager
    async def group_client(*_: Any) -> AsyncIterator[Any]:
        yield SimpleNamespace(_client=coordinator or Coordinator())

    async def offsets(_client: Any, topic: str) -> list[kafka_admin.PartitionOffsets]:
        asked.append(topic)
        if topic in missing:
            raise kafka_admin.NoSuchTopic(f"no topic {topic!r}")
        return [kafka_admin.PartitionOffsets(0, 0, 5, 3)]

    monkeypatch.setattr(kafka_admin, "group_client", group_client)
    monkeypatch.setattr(kafka_admin, "offsets", offsets)
    return asked


def fake_service(contact: KafkaContact, name: str = "observe-test") -> Service:
    subscriptions = [SimpleNamespace(topic=Topic.ORDER_REQUESTS)]
    consumer = SimpleNamespace(
        group_id="caravan-test", subscriptions=subscriptions, offsets=HandledOffsets()
    )
    return cast(
        Service,
        SimpleNamespace(
            name=name,
            settings=Settings(),
            metadata=MetaData(),  # no parked table
            consumer=consumer,
            kafka_contact=contact,
            consumer_stalls=Stalls(contact.clock),
            outbox_stalls=Stalls(contact.clock),
            loop_lag=LoopLag(),
            probes=[],
        ),
    )


def observed_at(name: str) -> float | None:
    return REGISTRY.get_sample_value("caravan_observed_at_seconds", {"service": name})


async def observe_for(service: Service, seconds: float) -> None:
    task = asyncio.create_task(observe.observe_loop(service, interval=0.01))
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_kafka_is_heard_from_while_a_database_round_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = fake_kafka(monkeypatch)

    async def hung(_: Service) -> None:
        await asyncio.Event().wait()  # a pool wait, a connect timing out in a failover

    monkeypatch.setattr(observe, "sample_outbox", hung)
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 42
    await observe_for(fake_service(contact, "observe-hung"), 0.2)
    assert len(asked) > 1  # round after round
    assert contact.silence() is None
    assert observed_at("observe-hung") is None  # the database's figures were never sampled


async def test_a_round_of_both_loops_with_no_failure_says_when(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_kafka(monkeypatch)

    async def answered(_: Service) -> None:
        return None

    monkeypatch.setattr(observe, "sample_outbox", answered)
    await observe_for(fake_service(KafkaContact(), "observe-clean"), 0.1)
    assert observed_at("observe-clean") is not None


async def test_its_rounds_have_ended_when_it_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service stopping cancels its observing: the database's round, cancelled in a query
    whose connection closes on the way out (SQLAlchemy's, shielded), outlived it, and ran
    on after the service's stop had disposed of its pool."""
    fake_kafka(monkeypatch)
    ended = asyncio.Event()

    async def closing_on_the_way_out(_: Service) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # the connection's close
            ended.set()

    monkeypatch.setattr(observe, "sample_outbox", closing_on_the_way_out)
    await observe_for(fake_service(KafkaContact(), "observe-cancelled"), 0.05)
    assert ended.is_set()


async def test_a_missing_topic_is_said_kafka_having_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_kafka(monkeypatch, missing=frozenset({Topic.ORDER_REQUESTS.value}))
    clock = Clock()
    contact = KafkaContact(silent_after=30, clock=clock)
    clock.now += 42  # a service started before `caravan prepare`, sampling every 5 s
    with pytest.raises(kafka_admin.NoSuchTopic):  # logged, and the round is not clean
        await observe.LagSampler(fake_service(contact)).sample()
    answer = await health(contact)
    assert answer.status_code == 200
    assert answer.json()["detail"] == "kafka: topic orders.requests.v1 missing"


async def test_a_partition_whose_records_wait_unhandled_is_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per partition, the records past where the service stands: the group's committed
    offset, or what this instance has handled past it, and never records the topic no
    longer keeps. Partition 0's stay; 1's are handled (not committed yet); 2's committed
    offset is older than the topic's first record, which is its last (nothing waits)."""
    found = {
        0: kafka_admin.PartitionOffsets(0, 0, 9, 6),
        1: kafka_admin.PartitionOffsets(1, 0, 20, 10),
        2: kafka_admin.PartitionOffsets(2, 50, 50, 30),
    }

    async def offsets(_client: Any, topic: str) -> list[kafka_admin.PartitionOffsets]:
        return list(found.values())

    fake_kafka(monkeypatch)
    monkeypatch.setattr(kafka_admin, "offsets", offsets)
    clock = Clock()
    service = fake_service(KafkaContact(silent_after=30, clock=clock), "observe-stalled")
    handled = service.consumer.offsets.position
    sampler = observe.LagSampler(service)
    topic = Topic.ORDER_REQUESTS.value
    for handled_to in range(12, 20, 2):  # 20 s, handling two records of partition 1 every 5 s
        handled[TopicPartition(topic, 1)] = handled_to
        await sampler.sample()
        clock.now += 5
    handled[TopicPartition(topic, 1)] = 19
    await sampler.sample()
    stalls = service.consumer_stalls
    assert [stalls.seconds(f"{topic}[{p}]") for p in (0, 1, 2)] == [20, 0, 0]
    assert stalls.stalled(15) == [Stalled(f"{topic}[0]", 3, 20)]  # 1's record is moving
    seconds = {
        p: REGISTRY.get_sample_value(
            "caravan_consumer_stalled_seconds",
            {"service": "observe-stalled", "topic": topic, "partition": str(p)},
        )
        for p in (0, 1, 2)
    }
    assert seconds == {0: 20, 1: 0, 2: 0}


async def test_kafka_away_for_the_lag_samples_is_one_warning_then_a_line_when_it_answers(
    caplog: pytest.LogCaptureFixture, faults: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka away, each service's consumer-lag sample (every 5 s) logged "metrics sample
    failed" each time: aiokafka's errors are no fault of PostgreSQL's, which alone were said
    once a minute. Now the relay's one fault, Kafka away, and the sample Kafka answers ends
    it in one line, as the relay's first batch published does."""
    asked = fake_kafka(monkeypatch)
    away = errors.KafkaConnectionError("Unable to bootstrap")
    up = False

    @contextlib.asynccontextmanager
    async def group_client(*_: Any) -> AsyncIterator[Any]:
        if not up:
            raise away
        yield SimpleNamespace(_client=Coordinator())

    monkeypatch.setattr(kafka_admin, "group_client", group_client)
    lag = observe.LagSampler(fake_service(KafkaContact(clock=faults), "observe-away"))
    for _ in range(13):  # a minute, every 5 s
        assert not await observe.sample([lag.sample])
        faults.now += 5
    up = True
    assert await observe.sample([lag.sample])
    assert asked and lag.client is not None
    warned = f"metrics sample failed: {away!r}"
    assert said(caplog, "shared.observe") == kafka_away_a_minute(warned)


def members(service: str) -> float | None:
    return REGISTRY.get_sample_value("caravan_consumer_group_members", {"service": service})


async def test_a_group_its_coordinator_cannot_describe_leaves_the_members_gauge_as_it_was(
    caplog: pytest.LogCaptureFixture, faults: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While its coordinator loads the group (a broker restarted) or the group moves to
    another broker, DescribeGroups answers it with that error and no member: the gauge said
    0, and CaravanConsumerGroupShrank fired where that lasted two minutes. The sample fails as
    Kafka away, and the gauge keeps its last value."""
    loading = Coordinator()
    fake_kafka(monkeypatch, coordinator=loading)
    lag = observe.LagSampler(fake_service(KafkaContact(clock=faults), "observe-loading"))
    assert await observe.sample([lag.sample])
    assert members("observe-loading") == 1
    loading.errors["caravan-test"] = errors.CoordinatorLoadInProgressError.errno
    clean = await observe.sample([lag.sample])
    assert members("observe-loading") == 1  # not 0
    assert not clean
    assert said(caplog, "shared.observe") == [
        (
            "WARNING",
            "metrics sample failed: GroupLoadInProgressError('describing group caravan-test')",
        ),
    ]
    del loading.errors["caravan-test"]
    assert await observe.sample([lag.sample])


async def test_a_sample_meeting_postgresql_away_says_so_in_words(
    caplog: pytest.LogCaptureFixture, faults: Clock
) -> None:
    """A metrics sample may be the first of a service to meet a PostgreSQL outage, and so say
    its one warning: it said the error's repr (``InternalError('cannot switch to state 15;
    ...')``), naming no PostgreSQL; now in the words the loops' warnings use."""

    async def probe() -> None:
        raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2)")

    assert not await observe.sample([probe])
    assert said(caplog, "shared.observe") == [
        ("WARNING", "metrics sample failed: lost the connection to PostgreSQL"),
    ]


async def test_no_broker_giving_the_cluster_s_metadata_is_kafka_away(
    caplog: pytest.LogCaptureFixture, faults: Clock
) -> None:
    """aiokafka raises a bare KafkaError, not retriable, when no broker gives the cluster's
    metadata: a lag sample meeting it was said as another fault's ("metrics sample failed:
    KafkaError: ...", a drill's first line of every broker restart), and the process's Kafka
    outage began at its next line, later. It is Kafka away, said as the relay's fault."""

    class Client:
        async def fetch_all_metadata(self) -> Any:
            raise errors.KafkaError("Unable to get cluster metadata over all known brokers")

    async def probe() -> None:
        await kafka_admin.partitions_of(SimpleNamespace(_client=Client()), ["orders.events.v1"])

    assert not await observe.sample([probe])
    said_away = "metrics sample failed: KafkaConnectionError('Unable to get cluster metadata"
    assert [r.getMessage()[: len(said_away)] for r in caplog.records] == [said_away]
    assert [getattr(r, FAULT, None) for r in caplog.records] == [KAFKA_AWAY]

"""Figures a service samples every few seconds for its ``/metrics``: outbox backlog and
age, its events parked until their ``order.placed`` (count and age), and its consumer
group's lag per partition and members; and, from them, how long each has waited
without moving (:mod:`shared.stall`), which ``/healthz`` also reads."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Table, func, select, text

from shared.db.engine import described, retried_fault
from shared.logs import retried
from shared.messaging import kafka_admin
from shared.messaging.relay import KAFKA_AWAY, kafka_answers, kafka_away
from shared.messaging.tables import UNSENT
from shared.metrics import (
    CONSUMER_GROUP_MEMBERS,
    CONSUMER_LAG,
    CONSUMER_STALLED_SECONDS,
    OBSERVED_AT,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_SECONDS,
    OUTBOX_REFUSED_ROWS,
    OUTBOX_STALLED_SECONDS,
    PARKED_EVENTS,
    PARKED_OLDEST_SECONDS,
)
from shared.runtime import Service
from shared.stall import OUTBOX

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[None]]


async def sample_outbox(service: Service) -> None:
    """The backlog, its oldest row's age and the rows set aside, Kafka refusing them for good
    (unsent too, but waiting for operations, not for the relay); and whether the relay has
    moved past the oldest row since the last sample (it publishes in the rows' order)."""
    outbox = service.relay.outbox
    # Each through its partial index (outbox_unsent, outbox_refused).
    unsent = select(
        func.count(),
        func.coalesce(func.extract("epoch", func.now() - func.min(outbox.c.created_at)), 0),
        func.min(outbox.c.id),
    ).where(text(UNSENT))
    refused = select(func.count()).where(outbox.c.refused_at.is_not(None))
    async with service.db.engine.connect() as conn:
        waiting, oldest, first = (await conn.execute(unsent.select_from(outbox))).one()
        aside = await conn.scalar(refused.select_from(outbox))
    OUTBOX_BACKLOG.labels(service.name).set(waiting)
    OUTBOX_OLDEST_SECONDS.labels(service.name).set(float(oldest))
    OUTBOX_REFUSED_ROWS.labels(service.name).set(aside or 0)
    service.outbox_stalls.sampled({OUTBOX: (first or 0, waiting)})
    OUTBOX_STALLED_SECONDS.labels(service.name).set(service.outbox_stalls.seconds(OUTBOX))


async def sample_parked(service: Service, parked: Table) -> None:
    """How many events wait in the service's ``parked`` table for their order's
    ``order.placed`` (:mod:`shared.messaging.parking`), and the oldest one's age. The table
    holds only events that came before their order's: a scan of it is small."""
    query = select(
        func.count(),
        func.coalesce(func.extract("epoch", func.now() - func.min(parked.c.parked_at)), 0),
    ).select_from(parked)
    async with service.db.engine.connect() as conn:
        waiting, oldest = (await conn.execute(query)).one()
    PARKED_EVENTS.labels(service.name).set(waiting)
    PARKED_OLDEST_SECONDS.labels(service.name).set(float(oldest))


@dataclass
class LagSampler:
    """Samples the service's consumer lag through one group client, kept open between
    samples (opening one costs connections, a handshake and metadata, every few seconds in
    every service) and opened again after a failure."""

    service: Service
    stack: AsyncExitStack | None = None
    client: AIOKafkaConsumer | None = None

    async def sample(self) -> None:
        if self.client is None:
            self.stack = AsyncExitStack()
            settings = self.service.settings
            self.client = await self.stack.enter_async_context(
                kafka_admin.group_client(
                    settings.kafka_bootstrap_servers, self.service.consumer.group_id, settings
                )
            )
        missing = []
        # Per partition, where the service stands: the group's committed offset, or past it
        # what this instance has handled and not committed yet (records the topic no longer
        # keeps wait for nobody); and how many records wait past that.
        handled = self.service.consumer.offsets.position
        queues: dict[str, tuple[int, int]] = {}
        labels: dict[str, tuple[str, str]] = {}
        try:
            for sub in self.service.consumer.subscriptions:
                topic = sub.topic.value
                try:
                    partitions = await kafka_admin.offsets(self.client, topic)
                except kafka_admin.NoSuchTopic:
                    missing.append(topic)  # Kafka answered: the topic is not there
                    continue
                for p in partitions:
                    CONSUMER_LAG.labels(self.service.name, topic, str(p.partition)).set(p.lag)
                    mine = handled.get(TopicPartition(topic, p.partition), 0)
                    at = max(p.beginning, p.committed or 0, mine)
                    queue = f"{topic}[{p.partition}]"
                    queues[queue], labels[queue] = (at, p.end - at), (topic, str(p.partition))
            state = await kafka_admin.group_of(self.client, self.service.consumer.group_id)
            if state.error is not None:  # members unknown, not none: the gauge keeps its value
                raise state.error
            CONSUMER_GROUP_MEMBERS.labels(self.service.name).set(len(state.members))
        except BaseException:
            await self.close()
            raise
        self.service.kafka_contact.heard(missing)  # for /healthz
        kafka_answers(log)
        stalls = self.service.consumer_stalls
        stalls.sampled(queues)
        for queue, (topic, partition) in labels.items():
            stalled = stalls.seconds(queue)
            CONSUMER_STALLED_SECONDS.labels(self.service.name, topic, partition).set(stalled)
        if missing:
            raise kafka_admin.NoSuchTopic(f"no topic {', '.join(map(repr, missing))}")

    async def close(self) -> None:
        stack, self.stack, self.client = self.stack, None, None
        if stack is not None:
            await stack.aclose()


async def sample(probes: list[Probe]) -> bool:
    """Run ``probes`` one after another; whether none failed (a failure is logged)."""
    failed = False
    for probe in probes:
        try:
            await probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = True
            if kafka_away(exc):
                log.warning("metrics sample failed: %r", exc, extra=retried(KAFKA_AWAY))
            else:  # in words, PostgreSQL's named: an outage's one warning may be this one
                log.warning("metrics sample failed: %s", described(exc), extra=retried_fault(exc))
    return not failed


async def observe_loop(service: Service, interval: float) -> None:
    """Sample the figures every ``interval`` seconds (``CARAVAN_METRICS_SAMPLE_SECONDS``)
    until cancelled; a failed sample is logged and tried again. The consumer lag, which
    tells ``/healthz`` that Kafka answers, is sampled in a loop of its own: a slow
    PostgreSQL round (a pool wait, a failover) made Kafka look silent. When both loops have
    had a round with no failure, the older of those says when
    (``caravan_observed_at_seconds``): a gauge keeps its last value while Kafka or PostgreSQL
    is away, and looked live (a lag of 0). Beside them, how late the event loop runs what is
    due (:class:`shared.loop_lag.LoopLag`)."""
    lag = LagSampler(service)
    database: list[Probe] = [lambda: sample_outbox(service), *service.probes]
    parked = service.metadata.tables.get(f"{service.name}.parked")
    if parked is not None:  # a service that parks events (shared.messaging.parking)
        database.append(lambda: sample_parked(service, parked))
    clean: dict[str, float] = {}  # per loop, when its last round with no failure ended

    async def rounds(name: str, probes: list[Probe]) -> None:
        while True:
            if await sample(probes):
                clean[name] = time.time()
                if len(clean) == 2:
                    OBSERVED_AT.labels(service.name).set(min(clean.values()))
            await asyncio.sleep(interval)

    try:  # cancelled, it ends once both rounds have (a gather would return at the first)
        async with asyncio.TaskGroup() as both:
            both.create_task(rounds("kafka", [lag.sample]))
            both.create_task(rounds("database", database))
            both.create_task(service.loop_lag.run())  # how late the loop wakes it
    finally:
        await lag.close()

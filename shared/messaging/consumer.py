"""Consuming: parse at the edge, dead-letter poison, deduplicate, retry transient faults.

Each record is handled in one database transaction that also records it in the inbox, so
a redelivered or replayed record is a no-op. Its offset is committed only after that
transaction commits (FastStream acks after the handler returns). A record that cannot be
parsed, or whose handler fails every bounded attempt, is copied to ``<topic>.dlq`` through
the outbox with headers saying why; database and network faults are retried without bound.

With ``batch_size`` above 1 a subscriber takes up to that many records at once and handles
them all in ONE transaction (one inbox insert for all, each handler in turn, one commit),
then commits their offsets once. Should any record of the batch be poison, or any handler
or the commit fail, that transaction is rolled back and the batch is handled again one
record at a time exactly as above, so dead-lettering, retries and ordering per key do not
depend on the batching.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from shared.db import is_transient
from shared.events.registry import Parsed, PoisonRecord, parse_record
from shared.logs import bind_order
from shared.messaging.uow import Tx, UnitOfWork
from shared.metrics import CONSUMED, DEAD_LETTERS, HANDLER_SECONDS
from shared.telemetry import consuming
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)

Handler = Callable[[Tx, Parsed], Awaitable[None]]
PoisonHook = Callable[[Tx, PoisonRecord], Awaitable[None]]
Prefetch = Callable[[Tx, Sequence[Parsed]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """What one service does with one topic: a handler per event type it acts on.

    Known types of the topic without a handler are skipped; ``on_poison`` may add events to
    a dead-lettering transaction (orders answers invalid requests with ``order.rejected``).
    ``prefetch`` runs in the handling transaction before the handlers, with every new record
    of the batch (or the one record): it loads, locks and keeps in ``Tx.identity`` what they
    will read, in a few statements instead of a few per record.
    """

    topic: Topic
    handlers: Mapping[EventType, Handler]
    on_poison: PoisonHook | None = None
    prefetch: Prefetch | None = None


@dataclass
class Consumer:
    """Wires a service's subscriptions onto a FastStream broker, all in one consumer group."""

    service: str
    group_id: str
    uow: UnitOfWork
    max_attempts: int = 3
    batch_size: int = 1
    batch_timeout_ms: int = 10
    subscriptions: list[Subscription] = field(default_factory=list)

    def register(self, broker: KafkaBroker, subscription: Subscription) -> None:
        self.subscriptions.append(subscription)
        subscriber = partial(
            broker.subscriber,
            subscription.topic.value,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title=f"{self.service}:{subscription.topic.value}",
        )
        if self.batch_size > 1:

            async def on_batch(msg: KafkaMessage) -> None:
                records = msg.raw_message
                assert isinstance(records, tuple)
                await self.dispatch_batch(subscription, records)

            subscriber(
                batch=True, max_records=self.batch_size, batch_timeout_ms=self.batch_timeout_ms
            )(on_batch)
            return

        async def on_message(msg: KafkaMessage) -> None:
            record = msg.raw_message
            assert isinstance(record, ConsumerRecord)
            await self.dispatch(subscription, record)

        subscriber()(on_message)

    async def dispatch(self, sub: Subscription, record: ConsumerRecord) -> None:
        started = time.perf_counter()
        topic = sub.topic.value
        try:
            parsed = parse_record(sub.topic, record.value)
        except PoisonRecord as poison:
            await self._until_done(partial(self._dead_letter, sub, record, poison))
            CONSUMED.labels(self.service, topic, "dead_lettered").inc()
            return
        handler = sub.handlers.get(EventType(parsed.envelope.type))
        if handler is None:
            CONSUMED.labels(self.service, topic, "skipped").inc()
            return
        with self._context(sub, record, parsed):
            outcome = await self._handle(sub, record, parsed, handler)
        CONSUMED.labels(self.service, topic, outcome).inc()
        HANDLER_SECONDS.labels(self.service, topic).observe(time.perf_counter() - started)

    async def dispatch_batch(self, sub: Subscription, records: Sequence[ConsumerRecord]) -> None:
        """Handle ``records`` in one transaction, or one by one if that fails."""
        if len(records) == 1:
            await self.dispatch(sub, records[0])
            return
        started = time.perf_counter()
        try:
            parsed = [parse_record(sub.topic, record.value) for record in records]
            outcomes = await self._handle_batch(sub, records, parsed)
        except asyncio.CancelledError:
            raise
        except PoisonRecord:
            outcomes = None
        except Exception as exc:
            log.warning("a batch of %d failed (%r); handling it one by one", len(records), exc)
            outcomes = None
        if outcomes is None:
            for record in records:
                await self.dispatch(sub, record)
            return
        topic = sub.topic.value
        each = (time.perf_counter() - started) / len(records)
        for outcome in outcomes:
            CONSUMED.labels(self.service, topic, outcome).inc()
            if outcome != "skipped":
                HANDLER_SECONDS.labels(self.service, topic).observe(each)

    async def _handle_batch(
        self, sub: Subscription, records: Sequence[ConsumerRecord], parsed: list[Parsed]
    ) -> list[str]:
        handlers = [sub.handlers.get(EventType(p.envelope.type)) for p in parsed]
        todo = [i for i, handler in enumerate(handlers) if handler is not None]
        outcomes = ["skipped"] * len(records)
        if not todo:
            return outcomes
        async with self.uow.begin() as tx:
            keys = [f"{parsed[i].envelope.source}|{parsed[i].envelope.id}" for i in todo]
            claimed = await tx.claim_all(keys, sub.topic.value)
            if sub.prefetch is not None:
                firsts = [parsed[i] for i, fresh in zip(todo, claimed, strict=True) if fresh]
                await sub.prefetch(tx, firsts)
            for i, new in zip(todo, claimed, strict=True):
                handler = handlers[i]
                assert handler is not None
                if not new:
                    outcomes[i] = "duplicate"
                    continue
                with self._context(sub, records[i], parsed[i]):
                    await handler(tx.caused_by(parsed[i].envelope), parsed[i])
                outcomes[i] = "handled"
        return outcomes

    @contextmanager
    def _context(self, sub: Subscription, record: ConsumerRecord, parsed: Parsed) -> Iterator[None]:
        """The span and log context of handling one record."""
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": sub.topic.value,
            "messaging.consumer.group.name": self.group_id,
            "messaging.kafka.message.offset": record.offset,
            "caravan.event_type": parsed.envelope.type,
            "caravan.order_id": parsed.envelope.correlationid or "",
        }
        with (
            consuming(sub.topic.value, record.headers, attributes),
            bind_order(parsed.envelope.correlationid, parsed.envelope.type),
        ):
            yield

    async def _handle(
        self, sub: Subscription, record: ConsumerRecord, parsed: Parsed, handler: Handler
    ) -> str:
        key = f"{parsed.envelope.source}|{parsed.envelope.id}"
        attempt = 0
        delay = 0.05
        while True:
            try:
                async with self.uow.begin(cause=parsed.envelope) as tx:
                    if not await tx.claim(key, sub.topic.value):
                        return "duplicate"
                    if sub.prefetch is not None:
                        await sub.prefetch(tx, [parsed])
                    await handler(tx, parsed)
                return "handled"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):
                    log.warning("transient fault, retrying: %r", exc)
                else:
                    attempt += 1
                    log.exception("handler failed (attempt %d/%d)", attempt, self.max_attempts)
                    if attempt >= self.max_attempts:
                        poison = PoisonRecord("handler_error", repr(exc)[:500], parsed.envelope)
                        await self._until_done(partial(self._dead_letter, sub, record, poison))
                        return "dead_lettered"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dead_letter(
        self, sub: Subscription, record: ConsumerRecord, poison: PoisonRecord
    ) -> None:
        log.warning(
            "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, poison
        )
        async with self.uow.begin(cause=poison.envelope) as tx:
            coords = f"dlq|{record.topic}|{record.partition}|{record.offset}|{self.group_id}"
            if not await tx.claim(coords, sub.topic.value):
                return
            headers = {
                "dlq.error": poison.code,
                "dlq.error.message": poison.message[:1000],
                "dlq.group": self.group_id,
                "dlq.topic": record.topic,
                "dlq.partition": str(record.partition),
                "dlq.offset": str(record.offset),
                "dlq.time": datetime.now(UTC).isoformat(),
            }
            value = record.value if record.value is not None else b""
            await tx.emit_raw(sub.topic.dlq, record.key, value, headers)
            DEAD_LETTERS.labels(self.service, record.topic, poison.code).inc()
            if sub.on_poison is not None:
                await sub.on_poison(tx, poison)

    async def _until_done(self, work: Callable[[], Awaitable[None]]) -> None:
        """Retry ``work`` through transient faults (dead-lettering itself must not be lost)."""
        delay = 0.05
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retrying after %r", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

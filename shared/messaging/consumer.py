"""Consuming: parse at the edge, dead-letter poison, deduplicate, retry transient faults.

Each record is handled in one database transaction that also records it in the inbox, so
a redelivered or replayed record is a no-op. Its offset is committed only after that
transaction commits (:class:`HandledOffsets`, every 100 ms). A record that cannot be
parsed, that its handler refuses (raising :class:`PoisonRecord`), or whose handler fails
every bounded attempt, is copied to ``<topic>.dlq`` through the outbox with headers saying
why; database and network faults are retried without bound.

A service reads all its topics with ONE Kafka consumer (one group member and one fetch per
poll, however many topics). With ``batch_size`` above 1 it takes up to that many records
at once, of any of its topics, and handles them all in ONE transaction (one inbox insert
for all, the subscriptions' prefetches, each handler in turn, one commit). Should any
record of the batch be poison, or any handler or the commit fail, that transaction is
rolled back and the batch is handled again one record at a time exactly as above, so
dead-lettering, retries and ordering per key do not depend on the batching.

A batch's records are handled a subscription at a time. A subscription's handlers write
some rows at commit that nothing of theirs reads back (``Tx.update_later``), but another
subscription's may: those rows are written before the batch moves on to the next one.
"""

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import Any, Literal, get_args

import aiokafka
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.message import StreamMessage
from prometheus_client import Counter, Histogram

from shared.backoff import exponential_step
from shared.db import fault, reason, storable_text
from shared.db.engine import Kind, address, described, retried_fault
from shared.events.envelope import CloudEvent
from shared.events.registry import (
    REGISTRY,
    Parsed,
    PoisonCode,
    PoisonRecord,
    load_record,
    validate_record,
)
from shared.faults import CONSUMER_AFTER_COMMIT, CONSUMER_BEFORE_COMMIT, failpoint
from shared.logs import bind_order, retried
from shared.messaging.relay import KAFKA_AWAY, kafka_answers, kafka_away
from shared.messaging.uow import Tx, UnitOfWork
from shared.metrics import CONSUMED, DEAD_LETTERS, HANDLER_SECONDS, start_at_zero
from shared.telemetry import consuming, current_trace_headers
from shared.topics import SERVICES, EventType, Topic, consumer_group

log = logging.getLogger(__name__)

REDRIVE_GROUP = "caravan.redrive-group"
"""Header of a record redriven from a dead letter (``caravan dlq redrive``): the consumer
group whose dead letter it was. Only that group handles it; the others skip it, since they
read the record the first time (a record every group dead-lettered, not JSON say, is not
multiplied by every group again). A record naming no group of Caravan's, which every group
would skip, is dead-lettered (``unknown_group``); one whose header has no value is read as
if it had none."""

REDRIVEN_FROM = "caravan.redriven-from"
"""Header of a record redriven from a dead letter: the letter's id (``<topic>.dlq:<partition>:
<offset>``)."""

LETTER_REDRIVEN_FROM = "dlq.redriven-from"
"""Header of a dead letter of a redriven record: the dead letter it was sent back from (its
:data:`REDRIVEN_FROM`), which ``caravan dlq list`` links it to."""

DEAD_LETTER_HEADERS = (
    "dlq.error",
    "dlq.error.message",
    "dlq.group",
    "dlq.topic",
    "dlq.partition",
    "dlq.offset",
    "dlq.time",
)
"""The headers of every dead letter: the contract's error code, then why, whose and where
from, and when; the record's trace headers come with them."""

VALUE_DROPPED = "dlq.value.dropped"
"""Header of a dead letter whose record was too big to copy whole (:data:`DEAD_LETTER_LIMIT`):
its size, and where the original is. The letter's value is empty."""

HEADERS_DROPPED = "dlq.headers.dropped"
"""Header of a dead letter that left out what it would have copied of the record's headers:
which, and why (a :data:`REDRIVEN_FROM` that names no dead letter; a letter that could not be
written as first made, written then with only the fixed ``dlq.*`` headers)."""

DEAD_LETTER_LIMIT = 1_000_000
"""The most bytes of key, value and headers a dead letter copies. Kafka takes records of up to
about a MiB: the copy of one close to that, with the dead-letter headers added, was refused by
the producer, and the outbox relay stopped at it for ever (no event of the service after it
was published)."""

# How long a commit of offsets waits for Kafka's answer (docs/running.md): aiokafka's waits
# for the group's coordinator without end while none can be found.
COMMIT_SECONDS = 2.0

_LETTER_ID = re.compile(rb"[A-Za-z0-9._-]{1,245}\.dlq:[0-9]{1,10}:[0-9]{1,19}")
"""What a :data:`REDRIVEN_FROM` copied into a dead letter must be: a letter's id, no more
(anyone who writes a topic may set the header, to any bytes of any length)."""

Outcome = Literal["handled", "duplicate", "skipped", "dead_lettered"]
"""What became of a consumed record: the ``outcome`` label of ``caravan_records_consumed_total``."""

Handler = Callable[[Tx, Parsed], Awaitable[None]]
PoisonHook = Callable[[Tx, PoisonRecord], Awaitable[None]]
Prefetch = Callable[[Tx, Sequence[Parsed]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """What one service does with one topic: a handler per event type it acts on.

    Known types of the topic without a handler are skipped, and so are the records that
    ``wants`` (if given) turns down: neither is claimed nor opens a transaction. ``on_poison``
    may add events to a dead-lettering transaction (orders answers invalid requests with
    ``order.rejected``).
    ``prefetch`` runs in the handling transaction before the handlers, with every new record
    of the batch (or the one record), and every other too if ``on_duplicate`` is given: it
    loads, locks and keeps in ``Tx.identity`` what they will read, in a few statements
    instead of a few per record.
    ``on_duplicate`` runs, in the transaction, for a record whose (source, id) the inbox holds:
    a repeat of what was handled, which it lets go, or another event under an id used before,
    which it refuses (raising :class:`PoisonRecord`: dead-lettered) rather than let the inbox
    drop it unsaid (orders refuses another request under a storefront's id used before).
    """

    topic: Topic
    handlers: Mapping[EventType, Handler]
    on_poison: PoisonHook | None = None
    prefetch: Prefetch | None = None
    wants: Callable[[Parsed], bool] | None = None
    on_duplicate: Handler | None = None

    @cached_property
    def skipped(self) -> frozenset[str]:
        """The topic's event types that this subscription has no handler for."""
        return frozenset(REGISTRY.get(self.topic, {})) - set(self.by_type)

    @cached_property
    def by_type(self) -> dict[str, Handler]:
        """:attr:`handlers` by the type an envelope names."""
        return {event_type.value: handler for event_type, handler in self.handlers.items()}

    def handler_for(self, parsed: Parsed | None) -> Handler | None:
        """The handler of ``parsed``, or None if it is skipped here."""
        if parsed is None or (self.wants is not None and not self.wants(parsed)):
            return None
        return self.by_type.get(parsed.envelope.type)

    def parse(self, value: bytes | None) -> Parsed | None:
        """``value`` parsed and validated, or None if it is of a type skipped here: the
        contract dead-letters records that fail to validate as a type the consumer handles,
        and about a third of the records a service reads are of types it does not.
        :class:`PoisonRecord` if it is poison, and also (``parse_error``) if parsing raised
        anything else: such a record would otherwise come back after every rewind and stall
        its partition for good."""
        try:
            raw = load_record(value)
            kind = raw.get("type")
            if isinstance(kind, str) and kind in self.skipped:
                return None
            assert value is not None  # load_record refuses none
            return validate_record(self.topic, raw, value)
        except PoisonRecord:
            raise
        except Exception as exc:
            log.exception("parsing a record of %s raised", self.topic.value)
            raise PoisonRecord("parse_error", reason(exc)[:500]) from exc


def dead_letter_key(
    group_id: str, topic: str, partition: int, offset: int, value: bytes | None
) -> str:
    """The inbox key that dead-letters a record once, however often it is delivered: its
    coordinates, and a digest of its value, so that a claim left by another record at the
    same coordinates (a topic deleted and created again) cannot swallow this one."""
    digest = hashlib.blake2b(value or b"", digest_size=12).hexdigest()
    return f"dlq|{topic}|{partition}|{offset}|{group_id}|{digest}"


MAX_REF = 64
"""The longest order ref a span or log line says (an ``order_ref``'s longest)."""


_OF_A_REQUEST = frozenset(
    {EventType.ORDER_REQUESTED, EventType.PLATFORM_ORDER_REQUESTED, EventType.ORDER_REJECTED}
)
"""The types of record whose correlation id names no order: a request's (its storefront's, as
it sent it) and its rejection's (its order_ref, or the request's event id where it had
none: :func:`services.orders.handlers.on_invalid_request`)."""


@dataclass(frozen=True)
class OrderNames:
    """What a record says of its order, for its span and log lines."""

    order_id: str | None
    order_ref: str | None = None
    correlation_id: str | None = None
    """A correlation id that is neither an order id nor the ref (a request's event id, or a
    storefront's own), said as such: said as ``order_id``, a search by an order's id found
    an event's."""


def order_of(envelope: CloudEvent | None) -> OrderNames:
    """The order id, order ref and correlation id a record is of, for its span and log lines:
    the ref its data names (``order_ref``), the one name of a request not yet an order; its
    correlation id, which names its order, but a request's or its rejection's
    (:data:`_OF_A_REQUEST`); one not the ref is said as ``correlation_id``."""
    if envelope is None:
        return OrderNames(None)
    ref = envelope.data.get("order_ref")
    # Cut to an order_ref's length: a record refused may say anything up to Kafka's limit.
    order_ref = ref[:MAX_REF] if isinstance(ref, str) and ref else None
    correlation = envelope.correlationid
    if envelope.type not in _OF_A_REQUEST:
        return OrderNames(correlation, order_ref)
    other = correlation[:MAX_REF] if correlation and correlation != ref else None
    return OrderNames(None, order_ref, other)


def _text_headers(record: ConsumerRecord) -> ConsumerRecord:
    """``record`` with each header's value readable as UTF-8 text (a missing value as empty,
    bytes that are not UTF-8 replaced), for FastStream's parser alone."""
    headers = record.headers
    try:
        for _, value in headers:
            value.decode()
    except (AttributeError, UnicodeDecodeError):
        text = [(k, (v or b"").decode(errors="replace").encode()) for k, v in headers]
        return replace(record, headers=text)
    return record


async def _parser(
    raw: ConsumerRecord | tuple[ConsumerRecord, ...],
    original: Callable[[Any], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's parser, given records whose headers it can read. It decodes every
    header's value as UTF-8 before it calls the handler, and Kafka allows a header with no
    value or with any bytes: one such record made it drop its whole batch, unhandled and never
    dead-lettered, and the offsets moved on past them. The handler gets the records as they
    came (``raw_message``)."""
    if isinstance(raw, tuple):
        msg = await original(tuple(_text_headers(r) for r in raw))
    else:
        msg = await original(_text_headers(raw))
    msg.raw_message = raw
    return msg


async def _message(msg: StreamMessage[Any]) -> Any:
    """The decoder of the service's subscriber: the handler takes FastStream's message, whose
    records it parses and validates itself (``Subscription.parse``). With the broker's
    ``apply_types`` off, FastStream calls the handler with what this returns, and nothing
    else."""
    return msg


class AiokafkaUnknown(RuntimeError):
    """An aiokafka without the private parts :class:`HandledOffsets` wraps
    (:meth:`HandledOffsets.see_requests`): a version it was not written for."""

    def __init__(self, missing: str) -> None:
        super().__init__(
            f"aiokafka {aiokafka.__version__}: {missing}, which HandledOffsets"
            " (shared/messaging/consumer.py) wraps so that a commit is sent only after one given"
            " up is answered, and a late failure is said: written for aiokafka 0.14, it needs"
            " mending for this version (or install the one uv.lock names)"
        )


@dataclass
class HandledOffsets:
    """Commits the offsets of handled records to Kafka, in the background, ``interval``
    seconds after the first record handled since the last commit (an idle service does not
    wake to commit nothing).

    Committing after every batch was a round trip that the next batch waited for, and at low
    rates (a batch per record) most of the broker's work; so was committing every 0.1 s. Only
    records whose transaction has committed are ever committed; a crash loses at most the
    last interval's offsets, and the records after them are delivered again and found in the
    inbox. A batch that raises is rewound (its partitions seek back to its first records), as
    FastStream's nack would.

    When a rebalance takes partitions away (:meth:`listener`), what was handled of them is
    committed at once, so that their next owner starts there; a batch still being handled
    then commits nothing when it ends (its records are delivered again, to whoever owns them
    by then, and found in the inbox), so no offset from before a rebalance is committed after
    it.
    """

    interval: float = 1.0
    commit_seconds: float = COMMIT_SECONDS  # how long a commit waits for Kafka's answer
    pending: dict[TopicPartition, int] = field(default_factory=dict)
    # Per partition still assigned, the offset after the last record handled, committed or
    # not: where the consumer stands (shared.observe, for a stalled consumer).
    position: dict[TopicPartition, int] = field(default_factory=dict)
    handled: asyncio.Event = field(default_factory=asyncio.Event)
    consumer: Any = None  # the subscriber's AIOKafkaConsumer, from its messages
    task: asyncio.Task[None] | None = None
    closed: bool = False
    rebalances: int = 0
    # aiokafka's requests of commits (:meth:`_request`) not yet answered, and those of them
    # whose commit was given up (their answer is said by :meth:`_answered`).
    sending: set[asyncio.Task[Any]] = field(default_factory=set)
    given_up: set[asyncio.Task[Any]] = field(default_factory=set)
    coordinator: Any = None  # aiokafka's GroupCoordinator whose requests go through _request

    def listener(self) -> ConsumerRebalanceListener:
        """The subscriber's rebalance listener, for :meth:`revoked`."""
        return _OnRevoke(self)

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Commit what was handled of ``partitions`` before they go to another member."""
        self.rebalances += 1
        partitions = list(partitions)
        for tp in partitions:
            self.position.pop(tp, None)
        offsets = {tp: self.pending.pop(tp) for tp in partitions if tp in self.pending}
        if offsets and self.consumer is not None:
            await self._send(offsets)  # if it fails, their next owner handles them again

    @asynccontextmanager
    async def handling(
        self, consumer: Any, records: Sequence[ConsumerRecord]
    ) -> AsyncIterator[None]:
        rebalances = self.rebalances
        try:
            yield
        except asyncio.CancelledError:
            raise
        except BaseException:
            for tp, offset in _first_offsets(records).items():
                with suppress(Exception):  # revoked meanwhile: its new owner starts there
                    consumer.seek(tp, offset)
            raise
        self.consumer = consumer
        if self.rebalances != rebalances:
            return  # its partitions were revoked meanwhile: see the class's docstring
        after: dict[tuple[str, int], int] = {}  # each partition's last offset handled, + 1
        for record in records:
            where = record.topic, record.partition
            after[where] = max(after.get(where, 0), record.offset + 1)
        for where, offset in after.items():
            tp = TopicPartition(*where)
            self.pending[tp] = max(self.pending.get(tp, 0), offset)
            self.position[tp] = max(self.position.get(tp, 0), offset)
        self.handled.set()
        if self.task is None and not self.closed:
            self.task = asyncio.create_task(self._loop(), name="commit-offsets")

    async def _loop(self) -> None:
        while True:
            await self.handled.wait()
            await asyncio.sleep(self.interval)
            self.handled.clear()
            await self.commit()

    async def commit(self) -> Exception | None:
        """Commit the offsets handled since the last commit, of the partitions still
        assigned (another member now handles the others, and commits them); what failed, if
        it did."""
        if not self.pending or self.consumer is None:
            return None
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in self.pending.items() if tp in assigned}
        self.pending = {}
        failed = await self._send(offsets) if offsets else None
        if failed is not None:  # they go with the next commit
            for tp, offset in offsets.items():
                self.pending[tp] = max(self.pending.get(tp, 0), offset)
            self.handled.set()  # the next commit comes an interval later, records or none
        return failed

    async def _send(self, offsets: dict[TopicPartition, int]) -> Exception | None:
        """Commit ``offsets`` to Kafka; what failed (and a warning), if it did. A failed commit
        is tried again an interval later, so its warning is a retried fault's: Kafka away
        (:func:`~shared.messaging.relay.kafka_away`) is the process's one, which a commit
        Kafka answers ends in one line (:func:`~shared.messaging.relay.kafka_answers`), and
        any other failure is its words; each said once, then once a minute while it lasts.

        Unanswered within ``commit_seconds``, a commit fails, Kafka away: aiokafka's waits
        for the group's coordinator for as long as none can be found, and a rebalance's
        (:meth:`revoked`, in aiokafka's coordination task) so held the consumer's stop
        without end: closing, aiokafka's wait for a coordinator returns at once, and its
        commit tries again every 100 ms. Its request, once sent, goes on (aiokafka shields
        it): :meth:`_request` says its late answer."""
        self.see_requests(self.consumer)
        sending = set(self.sending)
        try:
            async with asyncio.timeout(self.commit_seconds):
                await self.consumer.commit(offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                said = f"no answer from the group's coordinator within {self.commit_seconds} s"
                exc = KafkaTimeoutError(said)
                self.given_up |= self.sending - sending
            log.warning("committing offsets failed (%r)", exc, extra=retried(_fault(exc)))
            return exc
        kafka_answers(log)
        return None

    def see_requests(self, consumer: Any) -> None:
        """Have the requests of ``consumer``'s commits go through :meth:`_request`: aiokafka's
        own, private (its consumer's ``_coordinator``, once started, and that coordinator's
        ``_do_commit_offsets``). An aiokafka without either raises :class:`AiokafkaUnknown`,
        at the service's start (:meth:`Consumer.started`): unwrapped, commits would go on,
        but out of order after one given up, and a late failure logged by asyncio as an
        error no one retrieved."""
        if not hasattr(consumer, "_coordinator"):
            raise AiokafkaUnknown(f"its consumer ({type(consumer).__name__}) has no _coordinator")
        coordinator = consumer._coordinator
        if coordinator is None or coordinator is self.coordinator:  # not started; seen
            return
        if not callable(getattr(coordinator, "_do_commit_offsets", None)):
            said = f"its consumer's {type(coordinator).__name__} has no _do_commit_offsets"
            raise AiokafkaUnknown(said)
        self.coordinator = coordinator
        coordinator._do_commit_offsets = partial(self._request, coordinator._do_commit_offsets)

    async def _request(self, send: Callable[..., Awaitable[None]], *args: Any) -> None:
        """aiokafka's request of a commit (``GroupCoordinator._do_commit_offsets``), which
        its commit runs shielded, in a task of its own: given up (:meth:`_send`), the commit
        no longer waits for it, and its failure was an error no one retrieved, logged when the
        task was collected ('Task exception was never retrieved'), after Kafka came back.
        :meth:`_answered` retrieves it. It is sent after those given up before it are
        answered: one landing after it would move the group's offsets back."""
        task = asyncio.current_task()
        assert task is not None
        before = set(self.sending)
        self.sending.add(task)
        task.add_done_callback(self._answered)
        if before:
            await asyncio.wait(before)
        await send(*args)

    def _answered(self, task: asyncio.Task[Any]) -> None:
        self.sending.discard(task)
        failed = None if task.cancelled() else task.exception()  # retrieved: see _request
        if task in self.given_up:
            self.given_up.discard(task)
            if failed is not None:
                log.warning(
                    "a commit of offsets given up failed later (%r)",
                    failed,
                    extra=retried(_fault(failed)),
                )

    async def close(self) -> None:
        """Commit what was handled, and stop committing (before the consumer stops).

        That last commit is given ``commit_seconds``, as every commit is: with Kafka away,
        aiokafka's commit waits for the group's coordinator without end, and a service asked
        to stop did not, until its supervisor killed it (``caravan pause`` and ``caravan
        up``'s stop, after 15 s). The records whose offsets it leaves uncommitted are
        delivered again, and found in the inbox: those of a batch handled while it was
        under way too (the consumer handles records until the broker stops, after this),
        which is no failure (said as one, 'failed (None)', by orders in session 50's drill)."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
        try:
            failed = await self.commit()
        except Exception as exc:
            failed = exc
        if not self.pending:
            return
        if failed is None:
            log.info(
                "records handled during the last commit of offsets (a batch under way as the"
                " service stopped) are delivered again (and found in the inbox)"
            )
        else:  # why, said here too: the commit's own warning may be held back
            log.warning(
                "the last commit of offsets failed (%r): the records handled since the one"
                " before are delivered again (and found in the inbox)",
                failed,
            )


def _fault(exc: BaseException) -> str:
    """The retried fault a commit's failure is: Kafka away, or its words."""
    return KAFKA_AWAY if kafka_away(exc) else repr(exc)


class _OnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, offsets: HandledOffsets) -> None:
        self.offsets = offsets

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.offsets.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


def _first_offsets(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    return first


def wait_for_records(subscriber: object, wait_ms: int) -> None:
    """Make a FastStream batch subscriber wait for records, not sleep between asks.

    FastStream's (0.6, ``BatchSubscriber.get_msg``) asks aiokafka for records for
    ``batch_timeout_ms`` and, if none came, sleeps as long again before it asks anew: with
    the 10 ms this project had, an idle service woke 100 times a second, and a record that
    came during a sleep waited for its end, at each hop of a saga. aiokafka's ``getmany``
    already returns as soon as a record is there, so this one only asks again, waiting up to
    ``wait_ms`` each time (a stop cancels the wait). Under load nothing changes: records are
    there when it asks."""
    assert isinstance(subscriber, BatchSubscriber), type(subscriber)
    max_records = subscriber.max_records

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord, ...]:
        fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
        return tuple(record for records in fetched.values() for record in records)

    subscriber.get_msg = get_msg  # type: ignore[method-assign]


@dataclass
class Consumer:
    """Wires a service's subscriptions onto a FastStream broker: one subscriber (one Kafka
    consumer) for all their topics, in the service's consumer group."""

    service: str
    group_id: str
    uow: UnitOfWork
    # As the service's settings say (shared/settings.py, their defaults and their meaning).
    max_attempts: int
    batch_size: int
    batch_timeout_ms: int
    fetch_min_bytes: int
    fetch_max_wait_ms: int
    session_timeout_ms: int = 10_000
    subscriptions: list[Subscription] = field(default_factory=list)
    by_topic: dict[str, Subscription] = field(default_factory=dict)  # the same, by topic
    attached: bool = False
    offsets: HandledOffsets = field(default_factory=HandledOffsets)
    subscriber: Any = None  # FastStream's, made by attach(): its consumer, once started
    # The series of CONSUMED by (topic, outcome), and of HANDLER_SECONDS by topic: resolved
    # once, not for each record (:meth:`_count`).
    consumed: dict[tuple[str, ...], Counter] = field(default_factory=dict)
    timed: dict[str, Histogram] = field(default_factory=dict)

    def register(self, subscription: Subscription) -> None:
        """Add ``subscription`` (one per topic); :meth:`attach` subscribes to them all. Its
        topic's counters start at 0 (:func:`~shared.metrics.start_at_zero`)."""
        assert not self.attached, "subscriptions are registered before the broker starts"
        assert all(s.topic != subscription.topic for s in self.subscriptions)
        self.subscriptions.append(subscription)
        self.by_topic[subscription.topic.value] = subscription
        topic = [subscription.topic.value]
        consumed = start_at_zero(CONSUMED, [self.service], topic, get_args(Outcome))
        self.consumed.update({labels[1:]: series for labels, series in consumed.items()})
        start_at_zero(DEAD_LETTERS, [self.service], topic, get_args(PoisonCode))

    def attach(self, broker: KafkaBroker) -> None:
        """Subscribe ``broker`` to the registered subscriptions' topics, in one subscriber."""
        if self.attached:
            return
        self.attached = True
        subscriber = partial(
            broker.subscriber,
            *(s.topic.value for s in self.subscriptions),
            group_id=self.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,  # self.offsets commits what was handled
            title=self.service,
            parser=_parser,
            decoder=_message,
            fetch_min_bytes=self.fetch_min_bytes,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            session_timeout_ms=self.session_timeout_ms,
            # Kafka's 3 s, or a third of a shorter session: three beats missed before it ends.
            heartbeat_interval_ms=min(3000, self.session_timeout_ms // 3),
            listener=self.offsets.listener(),
        )
        if self.batch_size > 1:

            async def on_batch(msg: KafkaMessage) -> None:
                records = msg.raw_message
                assert isinstance(records, tuple)
                async with self.offsets.handling(msg.consumer, records):
                    await self.dispatch_batch(records)
                    failpoint(CONSUMER_AFTER_COMMIT)

            self.subscriber = subscriber(batch=True, max_records=self.batch_size)
            self.subscriber(on_batch)
            wait_for_records(self.subscriber, self.batch_timeout_ms)
            return

        async def on_message(msg: KafkaMessage) -> None:
            record = msg.raw_message
            assert isinstance(record, ConsumerRecord)
            async with self.offsets.handling(msg.consumer, (record,)):
                await self.dispatch(record)
                failpoint(CONSUMER_AFTER_COMMIT)

        self.subscriber = subscriber()
        self.subscriber(on_message)

    def started(self) -> None:
        """Once the broker has started: its consumer's commits go through
        :class:`HandledOffsets`' own (:meth:`HandledOffsets.see_requests`), or the service
        does not start (:class:`AiokafkaUnknown`, an aiokafka it was not written for)."""
        self.offsets.see_requests(self.subscriber.consumer)

    def _count(self, topic: str, outcome: Outcome, took: float | None = None) -> None:
        """Count a record of ``topic`` consumed, and the seconds it took to handle, if given."""
        self.consumed[topic, outcome].inc()
        if took is not None:
            timed = self.timed.get(topic)
            if timed is None:
                timed = self.timed[topic] = HANDLER_SECONDS.labels(self.service, topic)
            timed.observe(took)

    def _subscription(self, record: ConsumerRecord) -> Subscription:
        return self.by_topic[record.topic]

    async def dispatch(self, record: ConsumerRecord) -> None:
        started = time.perf_counter()
        sub = self._subscription(record)
        topic = sub.topic.value
        group = _redrive_group(record)
        if group is not None and group != self.group_id.encode() and group in _GROUPS:
            self._count(topic, "skipped")
            return
        try:
            if group is not None and group not in _GROUPS:  # every group would skip it
                raise PoisonRecord("unknown_group", f"{REDRIVE_GROUP} names no consumer group")
            parsed = sub.parse(record.value)
        except PoisonRecord as poison:
            with self._context(sub, record, poison.envelope):
                written = await self._dead_letter(sub, record, poison)
            self._count(topic, "dead_lettered" if written else "duplicate")
            return
        handler = sub.handler_for(parsed)
        if parsed is None or handler is None:
            self._count(topic, "skipped")
            return
        with self._context(sub, record, parsed.envelope):
            outcome = await self._handle(sub, record, parsed, handler)
        self._count(topic, outcome, time.perf_counter() - started)

    async def dispatch_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """Handle ``records`` (of any of the topics) in one transaction, or one by one if
        that fails."""
        if len(records) == 1:
            await self.dispatch(records[0])
            return
        if any(_redrive_group(record) is not None for record in records):
            for record in records:
                await self.dispatch(record)  # a redrive: rare, handled one by one
            return
        started = time.perf_counter()
        # A subscription's records together (each partition's stay in order): see _handle_batch.
        order = {sub.topic.value: i for i, sub in enumerate(self.subscriptions)}
        records = sorted(records, key=lambda record: order[record.topic])
        subs = [self._subscription(record) for record in records]
        try:
            parsed = [sub.parse(record.value) for sub, record in zip(subs, records, strict=True)]
            outcomes = await self._handle_batch(subs, records, parsed)
        except asyncio.CancelledError:
            raise
        except PoisonRecord:
            outcomes = None
        except Exception as exc:
            # Its reason, as a dead letter's (a race lost at commit: its constraint), not its
            # repr, which may quote values (a pydantic ValidationError's: the input's).
            said = reason(exc)
            log.warning("a batch of %d failed (%s); handling it one by one", len(records), said)
            outcomes = None
        if outcomes is None:
            for record in records:
                await self.dispatch(record)
            return
        # Each record's time is the whole batch's: it was handled when the batch committed.
        took = time.perf_counter() - started
        for record, outcome in zip(records, outcomes, strict=True):
            self._count(record.topic, outcome, None if outcome == "skipped" else took)

    async def _handle_batch(
        self,
        subs: list[Subscription],
        records: Sequence[ConsumerRecord],
        maybe_parsed: list[Parsed | None],
    ) -> list[Outcome]:
        handlers = [sub.handler_for(p) for sub, p in zip(subs, maybe_parsed, strict=True)]
        todo = [i for i, handler in enumerate(handlers) if handler is not None]
        parsed = {i: p for i in todo if (p := maybe_parsed[i]) is not None}
        outcomes: list[Outcome] = ["skipped"] * len(records)
        if not todo:
            return outcomes
        async with self.uow.begin() as tx:
            keys = [f"{parsed[i].envelope.source}|{parsed[i].envelope.id}" for i in todo]
            claimed = await tx.claim_all(keys, [records[i].topic for i in todo])
            # Each prefetch once, with the new records of every subscription that shares it.
            prefetches: dict[Prefetch, list[Parsed]] = {}
            for i, fresh in zip(todo, claimed, strict=True):
                prefetch = subs[i].prefetch
                if prefetch is not None and (fresh or subs[i].on_duplicate is not None):
                    prefetches.setdefault(prefetch, []).append(parsed[i])
            for prefetch, batch in prefetches.items():
                await prefetch(tx, batch)
            previous = None
            for i, new in zip(todo, claimed, strict=True):
                handler = handlers[i]
                assert handler is not None
                if not new:
                    again = subs[i].on_duplicate
                    if again is not None:  # its PoisonRecord: the batch one record at a time
                        await again(tx.caused_by(parsed[i].envelope), parsed[i])
                    outcomes[i] = "duplicate"
                    continue
                if previous is not None and subs[i] is not previous:
                    # A subscription's handlers may read what another's wrote at commit.
                    await tx.flush()
                previous = subs[i]
                with self._context(subs[i], records[i], parsed[i].envelope):
                    await handler(tx.caused_by(parsed[i].envelope), parsed[i])
                outcomes[i] = "handled"
            failpoint(CONSUMER_BEFORE_COMMIT)
        return outcomes

    @contextmanager
    def _context(
        self, sub: Subscription, record: ConsumerRecord, envelope: CloudEvent | None
    ) -> Iterator[None]:
        """The span and log context of handling one record, or dead-lettering it (its
        ``envelope`` None if it is no CloudEvent): in the trace its headers carry."""
        names = order_of(envelope)
        event_type = envelope.type if envelope else None
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": sub.topic.value,
            "messaging.consumer.group.name": self.group_id,
            "messaging.kafka.message.offset": record.offset,
            "caravan.event_type": event_type or "",
            "caravan.order_id": names.order_id or "",
        }
        if names.order_ref is not None:
            attributes["caravan.order_ref"] = names.order_ref
        if names.correlation_id is not None:
            attributes["caravan.correlation_id"] = names.correlation_id
        with (
            consuming(sub.topic.value, record.headers, attributes),
            bind_order(names.order_id, event_type, names.order_ref, names.correlation_id),
        ):
            yield

    async def _handle(
        self, sub: Subscription, record: ConsumerRecord, parsed: Parsed, handler: Handler
    ) -> Outcome:
        key = f"{parsed.envelope.source}|{parsed.envelope.id}"
        attempt = 0  # failures that were not transient
        failures = 0
        while True:
            try:
                async with self.uow.begin(cause=parsed.envelope) as tx:
                    if not await tx.claim(key, sub.topic.value):
                        if sub.on_duplicate is not None:
                            await sub.on_duplicate(tx, parsed)
                        return "duplicate"
                    if sub.prefetch is not None:
                        await sub.prefetch(tx, [parsed])
                    await handler(tx, parsed)
                    failpoint(CONSUMER_BEFORE_COMMIT)
                return "handled"
            except asyncio.CancelledError:
                raise
            except PoisonRecord as refused:  # by the handler (its transaction undone)
                written = await self._dead_letter(sub, record, refused)
                return "dead_lettered" if written else "duplicate"
            except Exception as exc:
                kind = fault(exc).kind
                if kind.transient:
                    said = described(exc, address(self.uow.db.engine))
                    log.warning("transient fault, retrying: %s", said, extra=retried_fault(exc))
                else:
                    attempt += 1
                    if kind is Kind.RACE_LOST and attempt < self.max_attempts:
                        # Another instance wrote the row first (handling the order's event of
                        # another topic, or during a rebalance): the next try finds it. One
                        # that loses at every try is a bug, said below.
                        log.warning(
                            "lost a race at commit (attempt %d/%d), retrying: %s",
                            attempt,
                            self.max_attempts,
                            reason(exc),
                        )
                    else:
                        log.exception("handler failed (attempt %d/%d)", attempt, self.max_attempts)
                    if attempt >= self.max_attempts:
                        poison = PoisonRecord("handler_error", reason(exc)[:500], parsed.envelope)
                        written = await self._dead_letter(sub, record, poison)
                        return "dead_lettered" if written else "duplicate"
                failures += 1
                await asyncio.sleep(exponential_step(failures, 0.05, 5.0))

    async def _dead_letter(
        self, sub: Subscription, record: ConsumerRecord, poison: PoisonRecord
    ) -> bool:
        """Copy ``record`` to its dead-letter topic, once (False: it was before, a replay),
        through transient faults. A letter that fails otherwise (a value PostgreSQL cannot
        store, a bug of ``on_poison``) would fail at every try and stall the partition, and
        every topic of the service behind it: it is written again with only the fixed
        ``dlq.*`` headers, which nothing the record holds can keep from being stored, and
        without ``on_poison``. Only a database fault can stop that one: it is retried."""
        failures = 0
        dropped: str | None = None
        while True:
            try:
                return await self._write_letter(sub, record, poison, dropped)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if fault(exc).kind.transient:
                    log.warning(
                        "transient fault dead-lettering, retrying: %s",
                        described(exc),
                        extra=retried_fault(exc),
                    )
                elif dropped is None:
                    log.exception("the dead letter could not be written; writing it bare")
                    dropped = _storable(
                        "every header of the record (and any answer of the service to it): the"
                        f" letter could not be written with them ({reason(exc)})"
                    )
                    continue
                else:
                    log.exception("the bare dead letter could not be written; retrying")
                failures += 1
                await asyncio.sleep(exponential_step(failures, 0.05, 5.0))

    async def _write_letter(
        self, sub: Subscription, record: ConsumerRecord, poison: PoisonRecord, bare: str | None
    ) -> bool:
        """One try of :meth:`_dead_letter`; ``bare``: why only the fixed headers go."""
        log.warning(
            "dead-lettering %s[%d]@%d: %s (`caravan dlq list --topic %s --waiting` lists it, to"
            " send back mended or discard: docs/operations.md, Dead letters waiting)",
            record.topic,
            record.partition,
            record.offset,
            poison,
            record.topic,
        )
        async with self.uow.begin(cause=poison.envelope) as tx:
            key = dead_letter_key(
                self.group_id, record.topic, record.partition, record.offset, record.value
            )
            if not await tx.claim(key, sub.topic.value):
                return False
            said = (
                poison.code,
                _storable(poison.message[:1000]),
                self.group_id,
                record.topic,
                str(record.partition),
                str(record.offset),
                datetime.now(UTC).isoformat(),
            )
            headers = dict(zip(DEAD_LETTER_HEADERS, said, strict=True))
            if bare is not None:
                headers[HEADERS_DROPPED] = bare
            else:
                # The trace of the record (this is in its span): a redrive continues it.
                headers.update(current_trace_headers())
                redriven_from = dict(record.headers).get(REDRIVEN_FROM)
                if redriven_from is not None and _LETTER_ID.fullmatch(redriven_from):
                    headers[LETTER_REDRIVEN_FROM] = redriven_from.decode()
                elif redriven_from is not None:
                    headers[HEADERS_DROPPED] = (
                        f"{REDRIVEN_FROM}: not <topic>.dlq:<partition>:<offset>"
                    )
            value = record.value if record.value is not None else b""
            size = sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())
            if len(value) + len(record.key or b"") + size > DEAD_LETTER_LIMIT:
                headers[VALUE_DROPPED] = (
                    f"{len(value)} bytes, more than a dead letter keeps; the record is at "
                    f"{record.topic}[{record.partition}]@{record.offset} while the topic keeps it"
                )
                value = b""
            await tx.emit_raw(sub.topic.dlq, record.key, value, headers)
            if sub.on_poison is not None and bare is None:
                await sub.on_poison(tx, poison)
            # A commit that failed is tried again, and counted once.
            tx.after_commit(DEAD_LETTERS.labels(self.service, record.topic, poison.code).inc)
        return True


_GROUPS = frozenset(consumer_group(service).encode() for service in SERVICES)


def _redrive_group(record: ConsumerRecord) -> bytes | None:
    """The consumer group a redriven record is for (:data:`REDRIVE_GROUP`); None if it
    names none (no such header, or one without a value: as if it had none)."""
    for name, value in record.headers:
        if name == REDRIVE_GROUP:
            return value or None
    return None


def _storable(text: str) -> str:
    """``text`` as PostgreSQL's text can hold it: NUL and what is not UTF-8 (a lone
    surrogate) shown as U+FFFD."""
    if storable_text(text):
        return text
    return (
        text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")
    )

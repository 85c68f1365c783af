"""The outbox relay: publishes committed outbox rows to Kafka, in order, and marks them sent.

One relay at a time works on a schema (a transaction-scoped advisory lock), so rows keep
their order per key across service instances. Its transaction reads the oldest unsent rows
and marks them sent in one statement, and commits once Kafka has answered them all. A crash
before that commit leaves the rows unsent, to be published again: consumers' inboxes make
that harmless. A graceful stop (the relay's task cancelled, its service asked to stop) lets
the batch under way finish first, within ``STOP_SECONDS``: its rows are marked sent before
the lock is let go, so that another instance's relay does not send them again.

The relay is woken by its own service's commits that added rows; it also looks every
``idle_poll_seconds`` for rows written by other processes (seeding, another instance whose
relay is busy). When another instance holds the lock, it tries again shortly: that instance
may have read the outbox before our rows committed.

A row that Kafka refuses for good (:func:`refused_for_good`: larger than the producer or the
broker takes, a topic name Kafka rejects) is set aside: ``refused_at`` and ``refusal`` (why)
are written in its row, which stays unsent and is never taken again, and the relay goes on
with the rows after it; it is logged once, as an error, and counted
(``caravan_outbox_refused_total``; ``caravan_outbox_refused_rows`` while it stays). Any other
failure (the broker away, a leader moving, too few replicas, a timeout, an authorization not
granted yet) leaves the row unsent, and those after it of its key (:func:`_left_unsent`), and
is retried with backoff; the rows that Kafka acknowledged, before or after it, are marked
sent. Kafka away or busy (:func:`kafka_away`), or a broker that lost the producer's sequence
(:func:`out_of_sequence`, as after its restart), is a one-line warning, as PostgreSQL
restarting is; anything else an error with its traceback.
"""

import asyncio
import contextlib
import inspect
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
)
from sqlalchemy import Table, func, select

from shared.backoff import exponential_step
from shared.db import Database, driver, log_retry
from shared.faults import RELAY_AFTER_PUBLISH, failpoint
from shared.kafka_security import client_kwargs
from shared.logs import answers_again, retried
from shared.messaging.tables import UNSENT
from shared.metrics import OUTBOX_PUBLISHED, OUTBOX_REFUSED, start_at_zero
from shared.settings import RELAY_KAFKA_WAIT_SECONDS, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCKED = -1
# What a stop gives Kafka to answer the batch under way (then marked sent), as the service's
# loops stop, and then its producer to deliver what it holds (docs/running.md).
STOP_SECONDS = 5.0
CLOSE_SECONDS = 1.0  # and then to close one given up on

REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError)
"""Kafka's refusals of a record itself, which no retry can change. Not the same as not
``retriable`` in aiokafka's sense: a timeout, a missing authorization or an out-of-order
sequence are not retriable there either, and pass (or are made to pass by operations)."""


class RefusedWithOthers(Exception):
    """The broker refused a batch of the producer's that may have held several rows (it
    batches rows of a partition together): which one it refuses is not known. The rows from
    there on are sent again one at a time, and only the one refused alone is set aside."""

    def __init__(self, refusal: BaseException) -> None:
        super().__init__(f"Kafka refused a batch of rows: {refusal!r}")


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def refused_for_good(exc: BaseException) -> bool:
    """Whether Kafka refuses the record ``exc`` came from whatever the retries."""
    return isinstance(exc, REFUSALS)


KAFKA_AWAY = "Kafka away"
"""The retried fault of a process's Kafka clients (:func:`kafka_away`): the relay's, a client
waiting for Kafka to start, the consumer-lag samples; said once a minute at most while it
lasts, and its end in one line (:func:`kafka_answers`)."""


KAFKA_SETTLES = 10.0
"""Seconds after Kafka answered one of the process's clients within which Kafka away, met
again, is the same outage going on: a broker back from a restart answers one client (the
relay's batch) and, loading its partitions and groups, fails others' requests for a few
seconds more (a consumer-lag sample's NotCoordinatorForGroupError, a commit of offsets
unanswered). A drill's broker down 45 s was said "Kafka answers again, 32 s after it was first
found away", then "2 s after", "1 s after": each of those an outage of its own, measured from
its own first line. Its end is said once in that time (a short restart's was said three times
in 213 ms), again only if it goes on longer (:meth:`shared.logs.Outage.over`)."""


def kafka_answers(logger: logging.Logger) -> None:
    """Kafka answered one of the process's clients (the relay's batch, a client started, a
    consumer-lag sample): its outage (:data:`KAFKA_AWAY`), if one was met, is over, said in
    one line (:func:`shared.logs.answers_again`); the next is said at once, unless met within
    :data:`KAFKA_SETTLES` seconds (the same outage: its end said again, measured from its
    first line, only :data:`KAFKA_SETTLES` seconds or more after it was last said)."""
    answers_again(logger, KAFKA_AWAY, "Kafka", KAFKA_SETTLES)


def kafka_away(exc: BaseException) -> bool:
    """Whether ``exc`` is Kafka away or busy, which passes by itself: one of aiokafka's
    ``retriable`` errors (a broker unreachable, a leader moving, too few replicas, a request
    timed out) or its :class:`KafkaTimeoutError` (a record not sent in time, its partition's
    leader unreachable). Not a refusal for good, nor an authorization not granted."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


def out_of_sequence(exc: BaseException) -> bool:
    """Whether ``exc`` is the broker refusing a batch of the producer's as out of sequence: it
    lost the producer's batches before it (after its restart; aiokafka also numbers a batch it
    expires unsent, its partition's leader unknown). Not Kafka away, but it passes as well:
    the relay renews its producer, which numbers afresh, and sends the rows again."""
    return isinstance(exc, OutOfOrderSequenceNumber)


_SEQUENCE_LOST = "Kafka lost the producer's sequence (a broker restarted?), retrying with a new one"


def check_topic(topic: str) -> None:
    """Raise :class:`InvalidTopicError` for a name Kafka rejects (its own rule: 1 to 249
    letters, digits, ``.``, ``_`` and ``-``, neither ``.`` nor ``..``). Checked before
    sending: the producer would wait for the topic's metadata, then say it is unknown, as
    it says of a valid topic not created yet (which operations may create: retried)."""
    if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise InvalidTopicError(f"{topic!r} is not a valid Kafka topic name")


def make_producer(
    bootstrap_servers: str, client_id: str, settings: Settings | None = None
) -> AIOKafkaProducer:
    """A durable producer: idempotent, ``acks=all``; authenticated as ``settings`` say."""
    return AIOKafkaProducer(
        **client_kwargs(settings),
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=round(RELAY_KAFKA_WAIT_SECONDS * 1000),
    )


async def force_close(producer: AIOKafkaProducer) -> None:
    """Close a producer whose stop was given up on (cancelled while it waited for Kafka to
    take what it held): its sender's task, which would go on trying the brokers, its
    connections, and the task its stop began to wait for what it held to be delivered
    (:func:`_delivering`), which nothing would end: left pending to the garbage collector, it
    was said as an error, asyncio's "Task was destroyed but it is pending!". Its own stop,
    once begun, returns at once when called again. Within ``CLOSE_SECONDS``: the sender waits
    for its requests in flight, which the closed connections end."""
    delivering = _delivering(producer)
    for task in delivering:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_SECONDS):
            await asyncio.gather(
                producer._sender.close(),
                producer.client.close(),
                *delivering,
                return_exceptions=True,
            )


def _delivering(producer: AIOKafkaProducer) -> list[asyncio.Task[Any]]:
    """The task ``producer``'s stop began that waits until Kafka has taken what the producer
    holds (aiokafka's ``MessageAccumulator.close()``, made by ``AIOKafkaProducer.stop`` and
    kept by nothing of ours), while it runs: found among the loop's tasks by what it closes."""
    accumulator = producer._message_accumulator
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and inspect.iscoroutine(coro := task.get_coro())
        and inspect.getcoroutinelocals(coro).get("self") is accumulator
    ]


class OutboxRelay:
    """Moves rows from one service's outbox to Kafka until stopped."""

    def __init__(
        self,
        db: Database,
        outbox: Table,
        new_producer: Callable[[], AIOKafkaProducer],
        *,
        service: str,
        batch_size: int = 500,
        idle_poll_seconds: float = 0.5,
        busy_retry_seconds: float = 0.02,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self._new_producer = new_producer
        self.producer = new_producer()  # started by its service, stopped by stop()
        self._producer_stale = False
        # The replaced producer, and its stop.
        self._retiring: tuple[AIOKafkaProducer, asyncio.Task[None]] | None = None
        self._alone = False  # the next batch's rows sent one at a time
        self.service = service
        start_at_zero(OUTBOX_PUBLISHED, [service])
        start_at_zero(OUTBOX_REFUSED, [service], [refusal.__name__ for refusal in REFUSALS])
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.busy_retry_seconds = busy_retry_seconds
        self._wake = asyncio.Event()
        self._lock_key = zlib.crc32(f"outbox:{db.schema}".encode())
        table = driver.qualified(outbox)
        # The oldest unsent rows (but those set aside), marked sent in the same statement that
        # reads them. The mark commits only after Kafka has answered every row; a crash before
        # that rolls it back, and the rows are published again.
        self._take_unsent = (
            f"UPDATE {table} SET sent_at = now() WHERE id IN ("
            f"SELECT id FROM {table} WHERE {UNSENT} ORDER BY id LIMIT $1)"
            " RETURNING id, topic, key, value, headers"
        )
        self._unmark = f"UPDATE {table} SET sent_at = NULL WHERE id = ANY($1::bigint[])"
        self._set_aside = (
            f"UPDATE {table} AS o SET sent_at = NULL, refused_at = now(), refusal = r.why"
            " FROM unnest($1::bigint[], $2::text[]) AS r(id, why) WHERE o.id = r.id"
        )

    def wake(self) -> None:
        """Called after a commit that may have added rows: publish them without waiting."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0  # in a row
        while True:
            try:
                published = await self._batch()
                failures = 0
                if published > 0:  # Kafka answered (none: it was not asked)
                    kafka_answers(log)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if kafka_away(exc) or out_of_sequence(exc):  # Kafka's: log_retry knows none
                    why = "Kafka away, retrying" if kafka_away(exc) else _SEQUENCE_LOST
                    log.warning("outbox relay failed; %s: %r", why, exc, extra=retried(KAFKA_AWAY))
                else:
                    log_retry(log, "outbox relay failed", exc)
                failures += 1
                await asyncio.sleep(exponential_step(failures, 0.1, 5.0))
                continue
            if published == LOCKED:
                await asyncio.sleep(self.busy_retry_seconds)
            elif published < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_seconds)

    async def _batch(self) -> int:
        """:meth:`publish_batch`, let finish when the relay is cancelled (its service
        stopping), for ``STOP_SECONDS`` at most: Kafka may have its rows already (and the
        producer's stop delivers what it holds), so their marks are committed before the relay
        lets go. Cancelled in the middle, the marks rolled back, and another instance's relay
        sent the rows again at once (a rolling restart published events twice). A batch not
        done by then (Kafka away) is cancelled: its rows stay unsent."""
        batch = asyncio.create_task(self.publish_batch())
        try:
            return await asyncio.shield(batch)
        except asyncio.CancelledError:
            try:
                await asyncio.wait({batch}, timeout=STOP_SECONDS)
            finally:
                batch.cancel()  # if not done by then
                # Its outcome is the stop's: a failure leaves its rows unsent, as it did.
                await asyncio.gather(batch, return_exceptions=True)
            raise

    async def publish_batch(self) -> int:
        """Publish up to one batch of unsent rows; returns how many were published or set
        aside, or :data:`LOCKED` when another instance's relay holds the schema's lock.
        Raises the first failure that may pass, once the rows Kafka acknowledged are marked
        (but those left unsent with it: :func:`_left_unsent`)."""
        self._wake.clear()  # before reading, so that a commit from now on is not missed
        if self._producer_stale:
            await self._renew_producer()
        # On the driver: a relay batch is two statements, run after every commit. The lock
        # is a statement of its own: taken in the read's statement, it would be taken after
        # that statement's snapshot, which could predate another relay's last marks.
        async with driver.transaction(self.db.engine) as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_key):
                return LOCKED
            rows = sorted(await conn.fetch(self._take_unsent, self.batch_size), key=_id)
            if not rows:
                return 0
            answers = await self._publish(rows)
            failpoint(RELAY_AFTER_PUBLISH)
            unsent = _left_unsent(rows, answers)
            failure = next((answer for answer in answers if _may_pass(answer)), None)
            # Acknowledged (marked sent) or refused for good (set aside); answers may be fewer.
            done = [(r, a) for r, a, left in zip(rows, answers, unsent, strict=False) if not left]
            if failure is not None and not done and not isinstance(failure, RefusedWithOthers):
                raise failure  # every row unsent: the marks rolled back
            left = [_id(row) for row, stays in zip(rows, unsent, strict=True) if stays]
            refused = [(row, exc) for row, exc in done if exc is not None]
            if left:
                await conn.execute(self._unmark, left)
            if refused:
                reasons = [f"{exc.__class__.__name__}: {exc}"[:2000] for _, exc in refused]
                await conn.execute(self._set_aside, [_id(row) for row, _ in refused], reasons)
        for row, exc in refused:
            self._said_refused(row, exc)
        OUTBOX_PUBLISHED.labels(self.service).inc(len(done) - len(refused))
        if isinstance(failure, RefusedWithOthers):
            said = "%s: the rows left unsent, from %d on, are sent again one at a time"
            log.warning(said, failure, left[0])
            self.wake()
        elif failure is not None:
            raise failure
        return len(done)

    async def _publish(self, rows: list[Any]) -> list[BaseException | None]:
        """Send ``rows`` in order and wait for Kafka's answers: each row's failure, or None
        once acknowledged. A row that cannot be sent for a reason that may pass ends it: the
        rows after it are not sent (their answers are left out). After the broker refused a
        batch, the next rows are sent one at a time (:class:`RefusedWithOthers`).

        All within :data:`RELAY_KAFKA_WAIT_SECONDS` (:func:`_within`), the batch's transaction
        open meanwhile: a Kafka that takes the requests and never answers (a broker frozen, a
        connection whose far end is gone) fails the rows not yet answered as Kafka away
        (:class:`KafkaTimeoutError`), where the idempotent producer would wait for it for
        ever and PostgreSQL end the transaction left idle, said as its connection lost. Those
        rows stay unsent; the producer keeps trying what it holds, and what it delivers late is
        sent again by the next batch (the inboxes drop the second)."""
        alone, self._alone = self._alone, False
        deadline = asyncio.get_running_loop().time() + RELAY_KAFKA_WAIT_SECONDS
        sent: list[asyncio.Future[Any] | BaseException | None] = []
        try:
            # The sends of a batch within one bound (one scope a row cost half of a row's
            # 5.3 µs); alone, each send within its own, which the producer's renewal and the
            # answers waited for between sends are not.
            async with contextlib.nullcontext() if alone else asyncio.timeout_at(deadline):
                for row in rows:
                    try:
                        check_topic(row["topic"])
                        if alone and self._producer_stale:
                            await self._renew_producer()
                        send = self.producer.send(
                            row["topic"],
                            value=row["value"],
                            key=row["key"],
                            headers=[
                                (k, str(v).encode()) for k, v in (row["headers"] or {}).items()
                            ],
                        )
                        future = await (_within(deadline, send) if alone else send)
                    except Exception as exc:  # refused by the producer itself, or not sent at all
                        sent.append(exc)
                    else:
                        future.add_done_callback(_retrieved)
                        # Alone, a row is a batch of its own: the broker's answer is about it.
                        sent.append(
                            await self._answer(future, alone, deadline) if alone else future
                        )
                    if _may_pass(sent[-1]):
                        break
        except TimeoutError:  # the batch's bound, in the send of the row after the last sent
            sent.append(_no_answer())
        return [
            await self._answer(answer, alone, deadline)
            if isinstance(answer, asyncio.Future)
            else answer
            for answer in sent
        ]

    async def _answer(
        self, future: asyncio.Future[Any], alone: bool, deadline: float
    ) -> BaseException | None:
        """Kafka's answer to one row by ``deadline``: None once acknowledged, else the
        failure (:class:`KafkaTimeoutError` when none came in time: the producer keeps the
        row, and its late answer is retrieved by :func:`_retrieved`)."""
        if not future.done():  # mostly answered already: Kafka answers a partition's batch
            # Waited for, not cancelled: the future is the producer's, set once Kafka answers.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await asyncio.wait({future})
            if not future.done():  # none in time: the producer keeps the row
                return _no_answer()
        try:
            await future
        except Exception as exc:
            # The broker refused a batch the producer had numbered: its next batches to that
            # partition would be out of sequence. A new producer starts afresh.
            self._producer_stale = True
            if refused_for_good(exc) and not alone:
                self._alone = True
                return RefusedWithOthers(exc)
            return exc
        return None

    async def _renew_producer(self) -> None:
        """Replace the producer, after the broker refused a batch it had numbered. The new
        one is in place before the old one stops, and that stop is not cancelled with the
        relay (its service stopping: both are left to :meth:`stop`); it returns at once once
        begun, its connections still open. The old one is given ``STOP_SECONDS`` to deliver
        what it holds, as :meth:`stop` gives a producer: Kafka not answering (a broker
        frozen), it waited for ever, and the relay with it; it is now closed then
        (:func:`force_close`), said in one line as Kafka away, and the rows it held, never
        marked sent, are sent again."""
        old, self.producer = self.producer, self._new_producer()
        retiring = asyncio.create_task(old.stop())
        self._retiring = (old, retiring)
        given_up = await stopped_within({retiring: old})
        self._retiring = None
        if given_up:
            log.warning(
                "%s: the outbox relay's old producer did not deliver what it held within"
                " %.0f s, and was closed (Kafka away); those rows stay unsent, sent again",
                self.service,
                STOP_SECONDS,
                extra=retried(KAFKA_AWAY),
            )
        else:
            retiring.result()  # a stop that failed: raised, as it was
        await self.producer.start()
        self._producer_stale = False

    async def stop(self) -> None:
        """Stop the producer, and finish stopping the one it replaced if the relay was
        cancelled during that: called by the service once the relay's task is done. Kafka
        away, a producer would wait for it without end to deliver what it holds: after
        ``STOP_SECONDS`` that is given up, with a warning, and the producers still stopping
        are closed (:func:`force_close`). Those rows were never marked sent (that waits for
        Kafka's answer): the next start sends them, and inboxes dedupe."""
        stopping = {asyncio.create_task(self.producer.stop()): self.producer}
        if self._retiring is not None:
            old, retiring = self._retiring
            stopping[retiring] = old
            self._retiring = None
        given_up = await stopped_within(stopping)
        if given_up:
            log.warning(
                "%s: outbox relay stopped without delivering what its producer held after"
                " %.0f s (Kafka unreachable?); those rows stay unsent, sent at the next start",
                self.service,
                STOP_SECONDS,
            )
        for task in stopping.keys() - given_up:
            task.result()  # a stop that failed: raised, as it was

    def _said_refused(self, row: Any, exc: BaseException) -> None:
        OUTBOX_REFUSED.labels(self.service, exc.__class__.__name__).inc()
        log.error(
            "outbox row %d set aside (topic %r, key %r, %d bytes): Kafka refuses it for good:"
            " %s. It stays in %s with refused_at and refusal; the rows after it go on",
            _id(row),
            row["topic"],
            row["key"],
            len(row["value"]),
            exc,
            driver.qualified(self.outbox),
        )

    async def backlog(self) -> int:
        async with self.db.engine.connect() as conn:
            n = await conn.scalar(
                select(func.count())
                .select_from(self.outbox)
                .where(self.outbox.c.sent_at.is_(None), self.outbox.c.refused_at.is_(None))
            )
        return int(n or 0)


async def stopped_within(
    stopping: dict[asyncio.Task[None], AIOKafkaProducer], seconds: float | None = None
) -> set[asyncio.Task[None]]:
    """Wait up to ``seconds`` (``STOP_SECONDS``) for the producers' stops (each delivering what
    it holds); those still stopping then (Kafka away), or whose stop was cancelled, are closed
    (:func:`force_close`). The stops so given up."""
    _, pending = await asyncio.wait(stopping, timeout=STOP_SECONDS if seconds is None else seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    given_up = {task for task in stopping if task.cancelled()}
    await asyncio.gather(*(force_close(stopping[task]) for task in given_up))
    return given_up


def _no_answer() -> BaseException:
    """Kafka away (:func:`kafka_away`): no answer by the batch's deadline."""
    said = f"no answer from Kafka within {RELAY_KAFKA_WAIT_SECONDS:g} s"
    away: BaseException = KafkaTimeoutError(said)
    return away


async def _within(deadline: float, waited: Awaitable[T]) -> T:
    """``waited`` by ``deadline`` (the event loop's clock), else :class:`KafkaTimeoutError`
    (Kafka away: :func:`kafka_away`)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await waited
    except TimeoutError:
        raise _no_answer() from None


def _left_unsent(rows: list[Any], answers: list[BaseException | None]) -> list[bool]:
    """Which of ``rows`` stay unsent, given Kafka's ``answers`` to them (fewer than the rows
    when those after a failure were not sent): a row not sent or whose failure may pass, and
    each row after it of its key on its topic, whatever its answer, so that no row is marked
    sent before an earlier one of its key (a key goes to one partition of its topic). The
    others are marked sent, or set aside: acknowledged on another partition after a failure,
    a row was left unsent, and published twice (a broker's restart, session 50's drill)."""
    waiting: set[tuple[str, bytes | None]] = set()  # the topics' keys of rows left unsent
    unsent = []
    for i, row in enumerate(rows):
        key = (row["topic"], row["key"])
        stays = key in waiting or i >= len(answers) or _may_pass(answers[i])
        if stays:
            waiting.add(key)
        unsent.append(stays)
    return unsent


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Retrieve Kafka's answer to a row once it comes: one the relay no longer waits for
    (after its batch's deadline, or the batch cancelled as its service stops) was a failure
    no one retrieved, an error with a traceback from asyncio ('Future exception was never
    retrieved', a broker restarting: ``LeaderNotAvailableError``). Its row stays unsent."""
    if not future.cancelled():
        future.exception()


def _may_pass(answer: object) -> bool:
    """Whether a row's answer is a failure that may pass (not an acknowledgement, nor yet
    a refusal for good)."""
    return isinstance(answer, BaseException) and not refused_for_good(answer)


def _id(row: Any) -> int:
    """A row's outbox id: ``RETURNING`` gives rows in no particular order, ids give theirs."""
    return int(row["id"])


__all__ = [
    "OutboxRelay",
    "check_topic",
    "kafka_answers",
    "kafka_away",
    "make_producer",
    "out_of_sequence",
    "refused_for_good",
    "stopped_within",
]

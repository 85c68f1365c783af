"""Running one service process: database, outbox relay, Kafka subscribers, background loops
and (for orders) the HTTP API, started together and stopped cleanly on SIGTERM or SIGINT.

A service started while Kafka cannot be reached (not up yet, restarting) waits for it, as
its loops wait for PostgreSQL: a one-line warning (Kafka away, a retried fault: once, then
once a minute), tried again with backoff, until Kafka answers (one line saying so) or the
service is stopped. It exited before, and its supervisor restarted it
again and again (``caravan up`` then stopped everything after five exits a minute; it now
goes on restarting with backoff, caravan/system.py). Meanwhile
its HTTP API and its loops run: orders are taken into the outbox, ``/healthz`` answers
(degraded once Kafka has been silent a while), texts and gateway calls go on.

A service refuses to start on a schema older than its code (``caravan prepare`` not run, or
failed part way): one line saying where the schema is and what the code needs, and it exits
2, rather than failing every record it handles and every request (a column it writes not
there yet). It reads the revision first, before serving or consuming; while PostgreSQL cannot
be reached it starts as it did and reads it once PostgreSQL answers, before its outbox relay
and subscribers start."""

import asyncio
import itertools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alembic.script import ScriptDirectory
from faststream.kafka import KafkaBroker
from sqlalchemy import MetaData, text

from shared.backoff import exponential_step
from shared.db import Database
from shared.db.engine import Kind, fault, retried_fault
from shared.db.migrate import migrations_folder, schema_warning
from shared.http import KafkaContact, create_app
from shared.kafka_security import broker_security
from shared.logs import retried
from shared.loop_lag import LoopLag
from shared.messaging import kafka_admin
from shared.messaging.consumer import Consumer, HandledOffsets, Subscription
from shared.messaging.relay import KAFKA_AWAY, OutboxRelay, kafka_answers, kafka_away, make_producer
from shared.messaging.retention import Expiring, Retention
from shared.messaging.uow import UnitOfWork
from shared.settings import Settings, check_settings
from shared.stall import Stalls
from shared.topics import consumer_group

log = logging.getLogger(__name__)

Loop = Callable[[], Coroutine[Any, Any, None]]

# The backoff of a start waiting for Kafka, or for PostgreSQL to read the schema's revision.
WAIT_BASE_SECONDS = 0.5
WAIT_CAP_SECONDS = 10.0


@dataclass
class Service:
    """The composition of one service process. Building it connects to nothing."""

    name: str
    settings: Settings
    metadata: MetaData
    db: Database
    uow: UnitOfWork
    relay: OutboxRelay
    broker: KafkaBroker
    consumer: Consumer
    loops: list[Loop] = field(default_factory=list)
    asgi_app: Any = None
    probes: list[Loop] = field(default_factory=list)  # extra figures for /metrics
    http_port: int | None = None
    kafka_contact: KafkaContact = field(default_factory=KafkaContact)  # read by /healthz
    # Sampled with the figures (shared.observe), read by /healthz.
    consumer_stalls: Stalls = field(default_factory=Stalls)
    outbox_stalls: Stalls = field(default_factory=Stalls)
    loop_lag: LoopLag = field(default_factory=LoopLag)  # noted by shared.observe, read by both
    # Said on its start line ("platform started: <this>"): what an operator checks it runs
    # with (the platform adapter's apps), never a secret.
    start_note: str = ""
    # Closed as the service stops, once its HTTP API has answered the requests in flight and
    # its loops have ended: the clients both use (the platform's order API, the SMS gateway).
    # Closed by a loop's end, the platform's client was closed under a push still being
    # answered (uvicorn finishes those after the loops are cancelled): a 500, its order lost.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def subscribe(self, subscription: Subscription) -> None:
        self.consumer.register(subscription)

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set or the process is asked to terminate."""
        from shared.observe import observe_loop  # it reads the Service it runs

        stop = stop or signal_event()
        try:
            checked = await self._check_schema()  # a schema behind the code: raised here
        except BaseException:
            await self.db.dispose()
            raise
        tasks: list[asyncio.Task[None]] = []
        server = None
        # Kafka is waited for beside the rest: the HTTP API takes orders into the outbox and
        # /healthz answers (degraded once Kafka is silent), and the loops that need only
        # PostgreSQL (texts, gateway calls, callbacks, sweeps) work, while it is away.
        kafka = asyncio.create_task(self._start_kafka(tasks, checked), name=f"{self.name}-kafka")
        try:
            tasks += [asyncio.create_task(loop(), name=f"{self.name}-loop") for loop in self.loops]
            observing = observe_loop(self, self.settings.metrics_sample_seconds)
            tasks.append(asyncio.create_task(observing, name=f"{self.name}-observe"))
            if self.asgi_app is not None and self.http_port is not None:
                import uvicorn

                self.asgi_app.state.kafka_contact = self.kafka_contact
                self.asgi_app.state.consumer_stalls = self.consumer_stalls
                self.asgi_app.state.outbox_stalls = self.outbox_stalls
                self.asgi_app.state.loop_lag = self.loop_lag

                config = uvicorn.Config(
                    self.asgi_app,
                    host=self.settings.http_host,
                    port=self.http_port,
                    log_config=None,
                    lifespan="off",
                )
                server = uvicorn.Server(config)
                tasks.append(asyncio.create_task(server.serve(), name=f"{self.name}-http"))
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, kafka, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if kafka.done() and not waiter.done():
                kafka.result()  # a failure that will not pass (a login refused): raised
                self.kafka_contact.heard()
                note = f": {self.start_note}" if self.start_note else ""
                log.info("%s started%s", self.name, note)
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            log.info("%s stopping", self.name)
            if not kafka.done():
                kafka.cancel()
                await asyncio.gather(kafka, return_exceptions=True)
            if server is not None:
                server.should_exit = True
            await self.consumer.offsets.close()
            await self.broker.stop()
            for task in tasks:
                if not task.done() and task.get_name() != f"{self.name}-http":
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for close in self.closers:
                try:
                    await close()
                except Exception:
                    log.exception("%s: closing %s failed", self.name, close)
            await self.relay.stop()
            await self.db.dispose()

    async def _start_kafka(self, tasks: list[asyncio.Task[None]], schema_checked: bool) -> None:
        """Start the relay's producer (and the relay, in ``tasks``), then the subscribers,
        each waiting for Kafka while it cannot be reached; unless ``schema_checked``, the
        schema's revision is read meanwhile, waiting for PostgreSQL, and neither the relay
        nor the subscribers start before it is (a schema behind the code raises then). A
        client that fails to start is stopped by ``serve``'s end whatever happens: cancelled
        here, or failing for good; so is a consumer whose commits its offsets' committer
        cannot see (:class:`shared.messaging.consumer.AiokafkaUnknown`)."""
        what = f"{self.name}: outbox relay"
        producer = asyncio.create_task(_waiting_for_kafka(what, self.relay.producer.start))
        try:
            for attempt in itertools.count(1):
                if schema_checked:
                    break
                await asyncio.sleep(exponential_step(attempt, WAIT_BASE_SECONDS, WAIT_CAP_SECONDS))
                schema_checked = await self._check_schema()
            await producer
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-relay"))
        self.consumer.attach(self.broker)
        await _waiting_for_kafka(f"{self.name}: consumer", self.broker.start, self.broker.stop)
        self.consumer.started()

    async def _check_schema(self) -> bool:
        """Read the revision of the service's schema (one query) and compare it with the head
        of its migrations (:func:`shared.db.migrate.schema_warning`): behind, or never
        migrated, raises :class:`shared.db.migrate.SchemaBehind`; ahead, a warning. False,
        with a one-line warning, while PostgreSQL cannot be reached."""
        query = text(f'SELECT version_num FROM "{self.name}".alembic_version')
        try:
            async with self.db.engine.connect() as conn:
                at = list(await conn.scalars(query))
        except Exception as exc:
            kind = fault(exc).kind
            if kind is Kind.NOT_MIGRATED:
                at = []
            elif kind.transient:
                said = "%s: PostgreSQL away, its schema's revision unread: %r"
                log.warning(said, self.name, exc, extra=retried_fault(exc))
                return False
            else:
                raise
        scripts = ScriptDirectory(str(migrations_folder(self.name)))
        if warning := schema_warning(scripts, self.name, at):
            log.warning("%s", warning)
        return True


async def _waiting_for_kafka(what: str, start: Loop, undo: Loop | None = None) -> None:
    """``start()`` a Kafka client, tried again with backoff while Kafka is away
    (:func:`kafka_away`), each failed try a one-line warning (said as the retried fault
    :data:`KAFKA_AWAY` is, its end one line once the client starts); ``undo()`` between tries
    stops what it started of the client. A failure that will not pass (a login refused) is
    raised: the service exits, as it did."""
    for attempt in itertools.count(1):
        try:
            await start()
        except Exception as exc:
            if not kafka_away(exc):
                raise
            if undo is not None:
                await undo()
            delay = exponential_step(attempt, WAIT_BASE_SECONDS, WAIT_CAP_SECONDS)
            said = "%s waiting for Kafka, trying again in %.1f s: %r"
            log.warning(said, what, delay, exc, extra=retried(KAFKA_AWAY))
            await asyncio.sleep(delay)
        else:
            kafka_answers(log)
            return


def build_service(
    name: str,
    settings: Settings,
    metadata: MetaData,
    expiring: Sequence[Expiring] = (),
    checks: Iterable[Callable[[], object]] = (),
) -> Service:
    """The common plumbing of a service whose tables are declared in ``metadata``; its
    retention also deletes the ``expiring`` rows (:mod:`shared.messaging.retention`). First,
    before anything is made, its settings and its own ``checks`` of them
    (:func:`shared.settings.check_settings`)."""
    check_settings(settings, checks)
    assert metadata.schema == name
    outbox, inbox = metadata.tables[f"{name}.outbox"], metadata.tables[f"{name}.inbox"]
    db = Database(settings, schema=name)
    uow = UnitOfWork(db, source=f"caravan/{name}", outbox=outbox, inbox=inbox)
    relay = OutboxRelay(
        db,
        outbox,
        lambda: make_producer(
            settings.kafka_bootstrap_servers,
            client_id=f"caravan-{name}-{settings.instance_id}",
            settings=settings,
        ),
        service=name,
        batch_size=settings.outbox_batch_size,
        idle_poll_seconds=settings.outbox_idle_poll_seconds,
    )
    uow.on_commit(relay.wake)
    broker = KafkaBroker(
        # a list: FastStream takes a comma-separated string for a single host
        settings.kafka_bootstrap_servers.split(","),
        client_id=f"caravan-{name}-{settings.instance_id}-consumer",
        security=broker_security(settings),
        logger=logging.getLogger(f"faststream.{name}"),
        # No dependency injection per message (it costs a thread-pool round trip for each):
        # the one handler takes the records themselves (``Consumer.attach``).
        apply_types=False,
    )
    consumer = Consumer(
        service=name,
        group_id=consumer_group(name),
        uow=uow,
        max_attempts=settings.handler_max_attempts,
        batch_size=settings.consumer_batch_size,
        batch_timeout_ms=settings.consumer_batch_timeout_ms,
        fetch_min_bytes=settings.consumer_fetch_min_bytes,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        offsets=HandledOffsets(interval=settings.consumer_commit_interval_ms / 1000),
    )
    service = Service(name, settings, metadata, db, uow, relay, broker, consumer)

    async def kafka_hours() -> float:
        """How long Kafka may keep the records of the topics the service consumes and of
        their dead-letter twins (a redrive brings a letter back while its ``.dlq`` keeps it)."""
        reads = [sub.topic for sub in consumer.subscriptions]
        topics = [t.value for t in reads] + [t.dlq for t in reads]
        return await kafka_admin.longest_kept_hours(
            settings.kafka_bootstrap_servers, topics, settings
        )

    retention = Retention(
        db,
        outbox,
        inbox,
        service=name,
        outbox_hours=settings.outbox_retention_hours,
        inbox_hours=settings.inbox_retention_hours,
        kafka_hours=kafka_hours,
        parked=metadata.tables.get(f"{name}.parked"),  # shared.messaging.parking
        expiring=expiring,
        interval_seconds=settings.messaging_prune_interval_seconds,
    )
    service.loops.append(retention.run)
    service.asgi_app = create_app(name, db, settings)
    service.http_port = {
        "orders": settings.http_port,
        "inventory": settings.inventory_http_port,
        "payments": settings.payments_http_port,
        "notifications": settings.notifications_http_port,
        "platform": settings.platform_http_port,
    }[name]
    return service


def signal_event() -> asyncio.Event:
    """An event set when the process is asked to terminate (SIGTERM or SIGINT)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event

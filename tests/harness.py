"""Helpers for tests against the running system: publish as a storefront, read every topic,
wait for outcomes, and query each service's tables."""

import asyncio
import contextlib
import functools
import http.server
import importlib
import inspect
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from caravan import system
from caravan.checkout import REPO_ROOT
from caravan.infra.postgres import LocalPostgres
from caravan.seeding import load
from caravan.tokens_cli import issue_token
from services import SERVICES
from shared.api import bearer_headers
from shared.auth import tokens
from shared.db import Database
from shared.events.envelope import CloudEvent, EventData, new_event
from shared.events.orders import (
    Buyer,
    ConfirmedPayment,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRequested,
)
from shared.events.registry import Parsed, PoisonRecord, parse_record
from shared.kafka_security import client_kwargs
from shared.messaging.consumer import Subscription
from shared.messaging.uow import Tx, UnitOfWork
from shared.seed import SeedFile
from shared.settings import Settings
from shared.topics import ALL_TOPICS, Topic, consumer_group

T = TypeVar("T")
TERMINAL = ("order.confirmed", "order.cancelled")


# Two signatures, so that mypy knows the answer's type whether ``check`` answers at once or
# with an awaitable (a union of the two callables infers nothing).
@overload
async def until(
    check: Callable[[], Awaitable[T]],
    what: str | Callable[[T], str],
    timeout: float = 30.0,
    every: float = 0.1,
    ready: Callable[[T], object] = bool,
    between: Callable[[], object] = lambda: None,
) -> T: ...
@overload
async def until(
    check: Callable[[], T],
    what: str | Callable[[T], str],
    timeout: float = 30.0,
    every: float = 0.1,
    ready: Callable[[T], object] = bool,
    between: Callable[[], object] = lambda: None,
) -> T: ...
async def until(
    check: Callable[[], Any],
    what: str | Callable[[Any], str],
    timeout: float = 30.0,
    every: float = 0.1,
    ready: Callable[[Any], object] = bool,
    between: Callable[[], object] = lambda: None,
) -> Any:
    """Ask ``check()`` every ``every`` seconds (awaiting its answer if that is awaitable)
    until the answer is ``ready`` (truthy, by default), and return it; ``between()`` runs
    after each answer that is not. The last ask is at the deadline, ``timeout`` seconds on;
    then this fails with what was awaited: ``what`` and the last answer, or
    ``what(last answer)`` where a function says it better."""
    deadline = time.monotonic() + timeout
    while True:
        seen = check()
        if inspect.isawaitable(seen):
            seen = await seen
        if ready(seen):
            return seen
        if time.monotonic() >= deadline:
            said = what(seen) if callable(what) else f"{what} (last seen: {seen!r})"
            raise AssertionError(f"waited {timeout}s for {said}")
        between()
        await asyncio.sleep(min(every, deadline - time.monotonic()))


async def backend_pid(conn: AsyncConnection) -> int:
    """The pid of the server process of ``conn``'s session (``pg_stat_activity.pid``)."""
    return int(await conn.scalar(text("select pg_backend_pid()")) or 0)


# Each session waiting for a lock the session :holder holds, or for one held by a session
# waiting so (a second statement on a row waits for the first waiter's tuple lock).
_WAITING_BEHIND = text(
    "with recursive behind(pid) as ("
    " select pid from pg_stat_activity where cast(:holder as int) = any(pg_blocking_pids(pid))"
    " union select a.pid from pg_stat_activity a join behind b"
    " on b.pid = any(pg_blocking_pids(a.pid))"
    ") select pid from behind order by pid"
)


async def waiting_behind(engine: AsyncEngine, holder: int) -> list[int]:
    """The pids of the sessions waiting for a lock the session ``holder`` holds, directly or
    behind another session waiting for it. Only waits on the holder's locks count: a running
    service's own brief wait (every service runs against the test session's database),
    counted as the test's, let a test go on before its statement waited."""
    # A transaction each: pg_stat_activity is read once in a transaction.
    async with engine.connect() as conn:
        found = await conn.execute(_WAITING_BEHIND, {"holder": holder})
        return [int(pid) for pid in found.scalars()]


async def started_waiting(
    uow: UnitOfWork, holder: int, steps: Sequence[Callable[[Tx], Coroutine[Any, Any, Any]]]
) -> list[asyncio.Task[Any]]:
    """Each of ``steps`` started in a task and a transaction of its own, each once those before
    it wait for a lock the session ``holder`` holds (a backend's pid: :func:`backend_pid`),
    directly or behind one another (:func:`waiting_behind`), and waiting so itself; their
    tasks. Only the steps' own sessions are counted (by their backend's pid). One that stops
    meanwhile raises what stopped it (a deadlock)."""
    running: list[asyncio.Task[Any]] = []
    pids: list[int] = []

    async def in_tx(step: Callable[[Tx], Coroutine[Any, Any, Any]]) -> Any:
        async with uow.begin() as tx:
            pids.append(await backend_pid(tx.conn))
            return await step(tx)

    async def waiting(n: int) -> bool:
        for task in running:
            if task.done():
                task.result()  # what stopped it
        behind = await waiting_behind(uow.db.engine, holder)
        return len(set(pids).intersection(behind)) >= n

    for n, step in enumerate(steps, start=1):
        running.append(asyncio.create_task(in_tx(step)))
        what = f"{n} transaction(s) waiting for a lock session {holder} holds"
        await until(functools.partial(waiting, n), what)
    return running


async def handled_alone(subscriptions: Sequence[Subscription], tx: Tx, record: Parsed) -> None:
    """``record`` handled in ``tx`` as a service's consumer handles a record alone
    (``Consumer._handle``, its inbox claim left out): its subscription's prefetch, if any,
    then its handler."""
    sub = next(s for s in subscriptions if s.handler_for(record) is not None)
    handler = sub.handler_for(record)
    assert handler is not None
    tx = tx.caused_by(record.envelope)
    if sub.prefetch is not None:
        await sub.prefetch(tx, [record])
    await handler(tx, record)


@dataclass
class EventLog:
    """Every record of every project topic, read from the earliest offset, kept in memory."""

    bootstrap: str
    settings: Settings | None = None  # how to log in to Kafka (default: the environment's)
    records: list[ConsumerRecord] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            **client_kwargs(self.settings),
        )
        await consumer.start()
        meta = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(topic, p)
            for topic in ALL_TOPICS
            for p in (meta.partitions_for_topic(topic) or [])
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend(records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def events(self, topic: Topic, **match: Any) -> list[CloudEvent]:
        """Parsed events of ``topic`` whose ``data`` (or ``type``) match every given value."""
        found = []
        for record in list(self.records):
            if record.topic != topic.value:
                continue
            try:
                env = parse_record(topic, record.value).envelope
            except Exception:
                continue
            if all((env.type if k == "type" else env.data.get(k)) == v for k, v in match.items()):
                found.append(env)
        return found

    def raw(self, topic: str) -> list[ConsumerRecord]:
        return [r for r in list(self.records) if r.topic == topic]

    def letters(self, topic: Topic, key: str, service: str) -> list[ConsumerRecord]:
        """The dead letters of ``topic`` keyed ``key`` (an order id) that ``service``'s
        consumer group wrote."""
        group = consumer_group(service).encode()
        return [
            r
            for r in self.raw(topic.dlq)
            if r.key == key.encode() and dict(r.headers).get("dlq.group") == group
        ]


PAYMENTS_BUYERS = "pay-%"
"""The buyers of the payments tests (``tests.e2e.test_payments_credit.buyer``), as SQL's like."""
PLAYED_TOPICS = (Topic.ORDER_EVENTS.value, Topic.INVENTORY_EVENTS.value)
"""Topics a test publishes on as the orders or the inventory service would."""


def _order_named(topic: str, value: bytes) -> list[str]:
    """The order a record of ``topic`` is about, if it names one (a poison one need not)."""
    try:
        order_id = parse_record(Topic(topic), value).envelope.data.get("order_id")
    except PoisonRecord:
        return []
    return [] if order_id is None else [str(order_id)]


@dataclass
class System:
    infra: system.Infrastructure
    procs: system.ServiceProcesses
    log: EventLog
    http_base: str
    token: str  # the session's token, with every scope
    settings: Settings | None = None  # how to log in to Kafka (default: the environment's)
    producer: AIOKafkaProducer | None = None
    engine: AsyncEngine | None = None
    http: httpx.AsyncClient | None = None
    # Orders whose events a test of this session published on orders' or inventory's topic,
    # playing that service's part: the orders service never had them.
    played: set[str] = field(default_factory=set)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.infra.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            **client_kwargs(self.settings),
        )
        await self.producer.start()
        url = self.infra.database_url.replace("postgresql://", "postgresql+asyncpg://")
        self.engine = create_async_engine(url)
        self.http = self.api("orders")

    @property
    def client(self) -> httpx.AsyncClient:
        """An HTTP client for the orders API, with the session's token."""
        assert self.http is not None
        return self.http

    def port(self, service: str) -> int:
        """The HTTP port of a service's first instance."""
        var = system.HTTP_PORT_VARS[SERVICES.index(service)]
        return int(self.procs.env[var])

    def api(
        self, service: str, token: str | None = "session", source: str | None = None
    ) -> httpx.AsyncClient:
        """A client for a service's HTTP API sending ``token`` (the session's by default,
        None: no token); ``source`` is the client address to call from (any 127.x.y.z), so
        that refused calls count against an address of the test's own."""
        chosen = self.token if token == "session" else token
        transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port(service)}",
            headers=bearer_headers(chosen),
            transport=transport,
            timeout=10,
        )

    async def gauge(self, service: str, name: str, /, **labels: str) -> float:
        """The sample of gauge ``name`` with ``labels`` (a ``service`` label among them, for
        one that has it) that ``service``'s ``/metrics`` shows (0 if none)."""
        async with self.api(service) as client:
            page = (await client.get("/metrics")).text
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    @contextlib.asynccontextmanager
    async def row_locked(self, table: str, column: str, value: str) -> AsyncIterator[int]:
        """Hold the row of ``table`` whose ``column`` is ``value`` locked (``FOR UPDATE``)
        while the block runs: what the block starts that takes that row's lock waits for it
        (:meth:`lock_waiters`) and goes on once the block ends. Makes a race certain. Yields
        the pid of the session holding it."""
        assert self.engine is not None
        async with self.engine.connect() as conn:
            held = await conn.begin()
            await conn.execute(
                text(f"select 1 from {table} where {column} = :v for update"), {"v": value}
            )
            try:
                yield await backend_pid(conn)
            finally:
                await held.rollback()

    async def lock_waiters(self, holder: int, what: str, count: int = 1) -> list[int]:
        """Until ``count`` sessions wait for a lock the session ``holder`` (a backend's pid:
        :meth:`row_locked`'s, :func:`backend_pid`) holds: their pids (:func:`waiting_behind`)."""
        assert self.engine is not None
        behind = functools.partial(waiting_behind, self.engine, holder)
        return await self.until(behind, what, 30, ready=lambda pids: len(pids) >= count)

    async def beside(self, holder: int, other: Awaitable[T]) -> tuple[asyncio.Task[T], bool]:
        """Start ``other`` (a claim) while the caller holds its own claim's transaction open:
        its task, and whether it finished without waiting for a lock that transaction holds
        (:meth:`lock_waiters`), which tells the two apart by the lock, not by timing.
        ``holder`` is the pid of the session holding it (:func:`backend_pid`)."""
        assert self.engine is not None
        task = asyncio.ensure_future(other)
        waits = functools.partial(waiting_behind, self.engine, holder)
        waiting = asyncio.create_task(self.until(waits, "a claim waiting on ours"))
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        return task, task.done()

    async def raced(
        self,
        uow: UnitOfWork,
        first: Callable[[Tx], Coroutine[Any, Any, Any]],
        second: Callable[[Tx], Coroutine[Any, Any, T]],
    ) -> tuple[asyncio.Task[T], bool]:
        """``first`` run in a transaction of ``uow`` held open, its work done, until
        ``second``, run in another, waits for a lock it holds (or ends without: the race it
        would lose); then ``first`` commits and ``second`` goes on. The task of ``second``
        (its answer, or what stopped it), and whether it waited (:meth:`beside`)."""
        held = asyncio.Event()
        pids: list[int] = []

        async def holding_open() -> None:
            async with uow.begin() as tx:
                await first(tx)
                pids.append(await backend_pid(tx.conn))
                await held.wait()

        async def after() -> T:
            async with uow.begin() as tx:
                return await second(tx)

        holding = asyncio.create_task(holding_open())
        await self.until(lambda: pids or holding.done(), "the first transaction's work done")
        if not pids:
            holding.result()  # what stopped it
        task, alone = await self.beside(pids[0], after())
        held.set()
        await holding
        await asyncio.wait({task})
        return task, not alone

    @contextlib.asynccontextmanager
    async def operations_page(
        self, port: int, *args: str, log: Path | None = None
    ) -> AsyncIterator[str]:
        """``caravan dashboard`` on ``port`` with the services' environment (and the session's
        token), once it answers; yields its base URL. Its output in ``log``, if given."""
        out = subprocess.DEVNULL if log is None else log.open("ab")
        board = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "caravan",
            "dashboard",
            "--port",
            str(port),
            *args,
            env=self.procs.env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=None if log is None else subprocess.STDOUT,
        )
        if not isinstance(out, int):
            out.close()  # the process has its own
        base = f"http://127.0.0.1:{port}"

        def running() -> None:
            assert board.returncode is None, "the operations page exited"

        try:
            async with httpx.AsyncClient(base_url=base) as client:

                async def login_page() -> int | str:
                    try:
                        return (await client.get("/login")).status_code
                    except httpx.HTTPError as e:
                        return repr(e)

                # A deadline, not a count of tries: a process started on a busy machine.
                await until(
                    login_page,
                    "the operations page to answer",
                    timeout=60,
                    ready=lambda answer: answer == 200,
                    between=running,
                )
            yield base
        finally:
            board.terminate()
            await board.wait()

    async def issue_token(
        self, name: str, *scopes: str, sources: list[str] | None = None, client: str | None = None
    ) -> str:
        """A new token (as ``caravan tokens issue`` makes it), bound to its own orders (as
        ``client``'s if given) and those of ``sources`` unless they are None."""
        return await issue_token(self.infra.database_url, name, list(scopes), sources, client)

    async def revoke_token(self, name: str) -> None:
        assert self.engine is not None
        async with self.engine.begin() as conn:
            await tokens.revoke(conn, name)

    async def stop(self) -> None:
        if self.producer:
            await self.producer.stop()
        if self.engine:
            await self.engine.dispose()
        if self.http:
            await self.http.aclose()

    async def seed(self, data: SeedFile) -> None:
        """Load reference data (as ``caravan seed`` does)."""
        await load(self.infra.database_url, data)

    @contextlib.asynccontextmanager
    async def alone(self, service: str) -> AsyncIterator[UnitOfWork]:
        """The unit of work of ``service``'s schema, with the service itself stopped, so
        that a test runs its loops' steps by hand; the service is started again after."""
        tables = importlib.import_module(f"services.{service}.adapters.tables")
        await asyncio.to_thread(self.procs.stop, [service])
        db = Database(Settings(DATABASE_URL=self.infra.database_url), service)
        try:
            yield UnitOfWork(
                db, source=f"caravan/{service}", outbox=tables.outbox, inbox=tables.inbox
            )
        finally:
            await db.dispose()
            await self.restart((service,))

    async def restart(self, names: tuple[str, ...], **env: str) -> None:
        """Stop these services and start them again, with ``env`` added to their environment
        (for example ``CARAVAN_SAGA_DEADLINE_SECONDS="2"``); waits until they are ready.
        Call it again without ``env`` to restore the defaults."""
        await self.relaunch(names, **env)
        await asyncio.to_thread(system.wait_ready, self.procs)

    async def relaunch(self, names: tuple[str, ...], **env: str) -> None:
        """:meth:`restart` without waiting until they are ready. In fewer processes than
        services, ``names`` must be all the services of the processes running them."""
        hosts = self.procs.hosts(names)
        hosted = set(self.procs.services(hosts))
        assert hosted <= set(names), f"{names}: their processes also run {hosted - set(names)}"
        await asyncio.to_thread(self.procs.stop, hosts)
        base = self.procs.env
        self.procs.env = {**base, **env}
        try:
            self.procs.start(names)
        finally:
            self.procs.env = base

    @contextlib.asynccontextmanager
    async def in_processes(self, processes: int, **env: str) -> AsyncIterator[None]:
        """Every service stopped and started again in ``processes`` processes (``caravan up
        --processes``), with ``env`` added to their environment; afterwards one process each
        again, with the environment as it was."""
        base = self.procs.env
        await asyncio.to_thread(self.procs.stop)
        self.procs.processes, self.procs.env = processes, {**base, **env}
        try:
            self.procs.start()
            await asyncio.to_thread(system.wait_ready, self.procs)
            yield
        finally:
            await asyncio.to_thread(self.procs.stop)
            self.procs.processes, self.procs.env = len(SERVICES), base
            self.procs.start()
            await asyncio.to_thread(system.wait_ready, self.procs)

    def kill(self, name: str) -> int:
        """``kill -9`` one service process (``orders``, ``inventory-2``, ``orders+inventory``,
        ...); its exit code."""
        proc = self.procs.procs.pop(name)
        proc.kill()
        return proc.wait()

    async def publish_raw(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        """Send ``value`` to ``topic``, to the partition its key hashes to or to ``partition``."""
        assert self.producer is not None
        if topic in PLAYED_TOPICS:
            self.played.update(_order_named(topic, value))
        return await self.producer.send_and_wait(
            topic, value, key=key, headers=headers, partition=partition
        )

    async def request(
        self,
        order: OrderRequested,
        source: str = "storefront/test",
        event: CloudEvent | None = None,
    ) -> CloudEvent:
        """Publish ``order.requested`` as a storefront does; returns the event sent."""
        event = event or new_event(order, source=source)
        await self.publish_raw(
            Topic.ORDER_REQUESTS.value, event.to_json(), order.order_ref.encode()
        )
        return event

    async def publish(self, data: EventData, source: str = "caravan/orders") -> CloudEvent:
        """Publish ``data`` as the service of ``source`` would: on its topic, keyed as it
        keys it; returns the event sent (:meth:`publish_event` sends it again)."""
        event = new_event(data, source=source)
        await self.publish_event(event, data)
        return event

    async def handled(self, schema: str, event: CloudEvent) -> None:
        """Wait until the service of ``schema`` has handled ``event`` (its inbox holds it)."""
        key = f"{event.source}|{event.id}"
        query = f"select key from {schema}.inbox where key = :k"
        await self.until(lambda: self.scalar(query, k=key), f"{event.type} handled by {schema}")

    async def consumed(self, service: str, *sent: RecordMetadata) -> None:
        """Wait until the group of ``service`` has committed past each of ``sent`` (records of
        topics it reads): it has handled each, or dropped it (a duplicate, a type it does not
        handle, a dead letter)."""
        group = consumer_group(service)
        await self.until(
            lambda: committed_offsets(self.infra.kafka_bootstrap, group),
            f"{service} to commit past {len(sent)} records",
            every=0.2,
            ready=lambda done: all(
                done.get(TopicPartition(r.topic, r.partition), 0) > r.offset for r in sent
            ),
        )

    async def placed_elsewhere(self) -> set[str]:
        """The orders tests placed as the orders or inventory service would (the money
        checks' ``placed_elsewhere``): those of this session (:attr:`played`), and those
        whose payment is a payments test's buyer's (``pay-<name>-<hex>``: those tests lend
        and charge for made-up order ids, and the database outlives the session)."""
        query = f"select order_id from payments.payments where buyer_id like '{PAYMENTS_BUYERS}'"
        return self.played | {str(r[0]) for r in await self.sql(query)}

    async def transactions(self, schema: str, *events: CloudEvent) -> int:
        """In how many transactions the service of ``schema`` handled ``events`` (1: they
        came as one batch)."""
        keys = [f"{e.source}|{e.id}" for e in events]
        query = f"select count(distinct xmin::text) from {schema}.inbox where key = any(:k)"
        return int(await self.scalar(query, k=keys))

    async def publish_event(self, event: CloudEvent, data: EventData) -> None:
        """Publish ``event`` (whose ``data`` is ``data``) again, as :meth:`publish` did."""
        key = data.partition_key().encode()
        await self.publish_raw(data.topic.value, event.to_json(), key)

    @overload
    async def until(
        self,
        check: Callable[[], Awaitable[T]],
        what: str | Callable[[T], str],
        timeout: float = 30.0,
        every: float = 0.1,
        ready: Callable[[T], object] = bool,
    ) -> T: ...
    @overload
    async def until(
        self,
        check: Callable[[], T],
        what: str | Callable[[T], str],
        timeout: float = 30.0,
        every: float = 0.1,
        ready: Callable[[T], object] = bool,
    ) -> T: ...
    async def until(
        self,
        check: Callable[[], Any],
        what: str | Callable[[Any], str],
        timeout: float = 30.0,
        every: float = 0.1,
        ready: Callable[[Any], object] = bool,
    ) -> Any:
        """:func:`until`, failing at once if a service has exited meanwhile."""
        return await until(check, what, timeout, every, ready, between=self.procs.check_alive)

    async def wait_for(
        self, what: Callable[[], list[T]], count: int = 1, timeout: float = 30.0
    ) -> list[T]:
        """What ``what()`` finds once it finds ``count`` of them."""
        return await self.until(
            what,
            lambda found: f"{count} events, found {len(found)}",
            timeout,
            ready=lambda found: len(found) >= count,
        )

    async def placed(self, order_ref: str, source: str = "storefront/test") -> str:
        """The order id of ``order_ref`` once ``order.placed`` is out."""
        events = await self.wait_for(
            lambda: self.log.events(
                Topic.ORDER_EVENTS, type="order.placed", order_ref=order_ref, source=source
            )
        )
        return str(events[0].data["order_id"])

    async def outcome(self, order_id: str, timeout: float = 30.0) -> CloudEvent:
        """The first terminal event of an order to reach the event log. It does not check
        that there is only one: a second could come later (:meth:`one_terminal` checks
        that)."""
        found = await self.wait_for(lambda: self.terminal(order_id), timeout=timeout)
        return found[0]

    def terminal(self, order_id: str) -> list[CloudEvent]:
        """The order's terminal events the event log has read so far."""
        return [
            e for e in self.log.events(Topic.ORDER_EVENTS, order_id=order_id) if e.type in TERMINAL
        ]

    async def timeline(self, order_id: str) -> list[str]:
        """The order's timeline, oldest first: the events that reached it and those it emitted,
        each recorded in the orders service's transaction that handled or emitted it."""
        rows = await self.sql(
            "select type from orders.timeline where order_id = :o order by id", o=order_id
        )
        return [r.type for r in rows]

    async def one_terminal(self, order_id: str) -> str:
        """The order's only terminal event type, checked in its timeline, where a second one
        would be as soon as what emitted it committed: call it once whatever could emit one
        has (an HTTP answer received, a later event of the order recorded). Also checked in
        the event log, as far as it has read."""
        steps = await self.timeline(order_id)
        assert len([s for s in steps if s in TERMINAL]) == 1, steps
        assert len({e.id for e in self.terminal(order_id)}) == 1  # the tests copy some events
        return next(s for s in steps if s in TERMINAL)

    async def sql(self, query: str, **params: Any) -> list[Any]:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            return list((await conn.execute(text(query), params)).all())

    async def execute(self, query: str, **params: Any) -> None:
        """Run a statement that changes the database, in a transaction of its own."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            await conn.execute(text(query), params)

    async def scalar(self, query: str, **params: Any) -> Any:
        rows = await self.sql(query, **params)
        return rows[0][0] if rows else None

    async def outbox_count(self, schema: str, topic: Topic, type: str, **data: str) -> int:
        """How many events of ``type`` whose ``data`` has these fields the service of
        ``schema`` wrote to its outbox for ``topic``. Only that topic's rows are read as
        JSON: a dead letter's value (``<topic>.dlq``) need not be JSON at all."""
        matches = "".join(f" and e.body -> 'data' ->> :k{i} = :v{i}" for i in range(len(data)))
        params = {f"k{i}": k for i, k in enumerate(data)} | {
            f"v{i}": v for i, v in enumerate(data.values())
        }
        return int(
            await self.scalar(
                "with rows as materialized"
                f" (select value from {schema}.outbox where topic = :topic),"
                " e as (select convert_from(value, 'UTF8')::jsonb as body from rows)"
                f" select count(*) from e where e.body ->> 'type' = :type{matches}",
                topic=topic.value,
                type=type,
                **params,
            )
        )


def ref(prefix: str = "T") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def raw_event(
    event_type: str, data: Any = None, *, source: str = "storefront/test"
) -> dict[str, Any]:
    """A CloudEvent as a plain mapping, with a fresh id, to be changed and sent as it is
    (what a model would refuse to build: invalid data, an unknown type). ``data`` None:
    the envelope has none."""
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "time": "2026-11-30T08:00:00Z",
    }
    return event if data is None else {**event, "data": data}


@dataclass(frozen=True)
class OrderEvents:
    """An order's ``order.placed`` and the two outcomes it may have, as the orders service
    emits them, to publish in an order it never does (:meth:`System.publish`). Its SKU is in
    no lot: inventory rejects it, and nothing more follows."""

    placed: OrderPlaced
    confirmed: OrderConfirmed
    cancelled: OrderCancelled


def order_events(order_ref: str, phone: str, source: str = "storefront/test") -> OrderEvents:
    order_id = str(uuid.uuid4())
    placed = OrderPlaced(
        order_id=order_id,
        order_ref=order_ref,
        source=source,
        buyer_id="t-rich",
        lines=[OrderLine(sku="T-UNSTOCKED", quantity=1)],
        buyer=Buyer(id="t-rich", phone=phone, locale="en"),
    )
    confirmed = OrderConfirmed(
        order_id=order_id,
        order_ref=order_ref,
        total_fen=3500,
        payment=ConfirmedPayment(method="prepaid"),
    )
    cancelled = OrderCancelled(order_id=order_id, order_ref=order_ref, reason="out_of_stock")
    return OrderEvents(placed, confirmed, cancelled)


def other_database(url: str, database: str) -> str:
    """``url`` naming ``database`` on the same server (a socket folder in its query stays)."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The offsets ``group`` has committed, by partition (none: empty)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items()}


async def sent(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """``values`` sent to ``topic``, each acknowledged, by a producer of their own."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    passing: asyncio.Event | None,
    holds: Callable[[bytes], bool] | None = None,
    delay: float = 0.0,
) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            if passing is not None and holds is not None and holds(data):
                passing.clear()
            if passing is not None:
                await passing.wait()
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    writer.close()


def forwarder(
    to_host: str,
    to_port: int,
    passing: asyncio.Event | None = None,
    holds: Callable[[bytes], bool] | None = None,
    delay: float = 0.0,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A server's connection handler passing each connection on to ``to_host:to_port``: a
    broker or database that "comes up" when ``asyncio.start_server`` opens it. Given
    ``passing``, bytes pass only while it is set: cleared, every connection, open or new,
    takes what is sent and answers nothing, none closed (a black hole: a server frozen, a
    NAT entry dropped); set again, what was held goes on. Given ``holds`` too, a client's
    bytes it says true of clear ``passing`` before they pass (a server frozen as it was sent
    them: a ``COMMIT``). Given ``delay``, a client's bytes pass that many seconds after they
    came, one read of them after another (a server that far away: each statement's answer
    waits for it)."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(to_host, to_port)
        await asyncio.gather(
            _pipe(reader, upstream_writer, passing, holds, delay),
            _pipe(upstream_reader, writer, passing),
        )

    return forward


class Heard(logging.Handler):
    """Sets ``said`` once a record saying ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.said = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.said.set()


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server answering with ``handler``, in a thread, while the block lasts:
    its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# The ports free_port() hands out: below the kernel's range of ports for outgoing connections
# (32768-60999 by default), out of which a port bound to 0 is taken too, so that no connection
# a service, a client or Kafka makes meanwhile can take the port between free_port() and the
# test's server binding it (CI, once: both operations page tests of test_db_black_hole given
# 60947, uvicorn refusing it, "address already in use"); and clear of the test sessions' own
# ports (PostgreSQL from 15433, HTTP from 18080, Kafka from 28092, 1500 more a worker).
FREE_PORTS = range(22000, 28000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts), out
    of :data:`FREE_PORTS`."""
    for _ in range(1000):
        port = random.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port of {FREE_PORTS} free on 127.0.0.1")


def market_zone_far_from_midnight(now: datetime) -> str:
    """The market zone of a test session started at ``now``: of the whole-hour offsets within
    two hours of Beijing time (UTC+6 to UTC+10), the one whose clock is nearest noon, so at
    least two hours from midnight. The tests compute "today" in their own process and the
    services when they handle a record: in Beijing time a run crossing 16:00 UTC could see
    the two disagree (an instalment "due today" handled the day after). Within two hours of
    Beijing time, what the tests say of Shanghai still holds of the market (a +1 number is
    in the quiet hours around Shanghai's present moment; 23:00 UTC is the next morning's)."""

    def from_noon(hours: int) -> int:
        local = now.astimezone(timezone(timedelta(hours=hours)))
        return abs(local.hour * 60 + local.minute - 12 * 60)

    hours = min((8, 7, 9, 6, 10), key=from_noon)
    return f"Etc/GMT-{hours}"  # the POSIX sign: Etc/GMT-8 is UTC+8


@contextlib.contextmanager
def scratch_cluster(prefix: str) -> Iterator[LocalPostgres]:
    """A local PostgreSQL cluster of the test's own under a new ``/tmp/<prefix>...``
    directory, started, and removed afterwards (for tests that restart or reconfigure it)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)  # the cluster's OS user must reach it, else /var/tmp is used instead
    pg = LocalPostgres(base, port=free_port())
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[str]:
    """A new empty database on the server of ``admin_url`` (a name starting with ``prefix``),
    dropped afterwards whatever happened; yields its URL, as the admin."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'create database "{name}"'))
        try:
            yield other_database(admin_url, name)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'drop database "{name}" with (force)'))
    finally:
        await admin.dispose()


def process_env(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(v.split("=", 1) for v in raw.decode().split("\0") if "=" in v)


STOPPED_STATES = {"T", "t", "Z", "X"}  # of a thread in /proc: stopped, or gone


async def freeze(pid: int, within: float = 10.0) -> None:
    """Stop process ``pid`` (SIGSTOP), returning once every one of its threads is stopped.
    ``kill`` returns before they are: the signal reaches a process's threads one by one, and
    a JVM's seventy-odd, still running for a moment, answered a request sent at once (CI: a
    broker meant frozen acknowledged the record a relay test's producer was to hold)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + within
    while running := [t for t, state in _thread_states(pid).items() if state not in STOPPED_STATES]:
        assert time.monotonic() < deadline, f"threads {running} of {pid} still run after {within} s"
        await asyncio.sleep(0.005)


def _thread_states(pid: int) -> dict[str, str]:
    """Each thread of ``pid``: its state, as /proc says (the field after the name)."""
    states = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            states[task.name] = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    return states

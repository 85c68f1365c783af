"""Orders per second through the whole pipeline, beside this machine's own limits.

Starts its own local system (one Kafka node, PostgreSQL and the five services, on ports of
its own, under ``.cache/bench-<kafka port>``, which one run holds at a time) and, in the
same run:

1. measures the machine's ceilings: PostgreSQL's commit rate (``pgbench``, a one-row
   insert-and-commit script, one client per subscriber of the services), Kafka's produce
   and consume rate (aiokafka, durable producer, the size of an order request), and a
   no-op FastStream consume-and-publish relay (the framework's floor, in its own process);
2. drives storefront orders (``order.requested`` on ``orders.requests.v1``, microloans of
   seeded buyers over many SKUs) closed-loop at maximum throughput, then open-loop at
   fixed arrival rates stepped up until p99 latency or the backlog runs away;
3. reports confirmed orders/s, latency p50/p95/p99 from publishing ``order.requested`` to
   seeing ``order.confirmed``, the CPU of every process, Kafka records and database
   commits per order, the two ratios of issue 11, and the run over time (orders confirmed
   per second and their p99, every 2 s, each measured window marked); writes
   ``bench/results/pipeline.json`` and ``bench/results/pipeline.png``.

    .venv/bin/python bench/pipeline.py [--duration 30] [--kafka-port 23092] ...

Durability stays as the services run it (``acks=all``, idempotent producers, ``fsync`` and
``synchronous_commit`` on). ``--relax-synchronous-commit`` turns the database's
``synchronous_commit`` off for the run (a commit then returns before its WAL is flushed), to
show what waiting for the disk costs; such a run is labelled as relaxed and written apart
(``pipeline-relaxed.json``). The report reads the settings back from the database.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import add_processes, mark_windows, processes_suffix
from caravan import system
from caravan.checkout import CACHE
from caravan.seeding import bench_seed, load_again
from caravan.tokens_cli import issue_token
from shared.api import bearer_headers
from shared.events.envelope import new_event
from shared.events.orders import OrderRequested
from shared.messaging import kafka_admin
from shared.messaging.relay import make_producer
from shared.seed import SeedFile
from shared.settings import Settings
from shared.topics import ALL_TOPICS, EventType, Topic, consumer_group

RESULTS = Path(__file__).resolve().parent / "results"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SKUS = 200
BUYERS = 500
SUBSCRIBERS = 8  # (service, topic) subscriptions; each holds one connection at a time
CEILING_TOPIC = "bench.ceiling.v1"
RUN = uuid.uuid4().hex[:8]


def relay_topics(run: str) -> tuple[str, str]:
    """The no-op relay's topics, new in each run (and deleted at its end)."""
    return f"bench.relay-in.{run}", f"bench.relay-out.{run}"


FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.2, 1.5, 2.0)  # of the closed-loop rate


def say(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


# --- the system under test -------------------------------------------------------------


def seed() -> SeedFile:
    buyers = [
        {
            "id": f"bench-buyer-{b:04d}",
            "phone": f"+86139{b:08d}",
            "locale": "en",
            "credit_limit_fen": 10**14,
        }
        for b in range(BUYERS)
    ]
    skus = [f"BENCH-{i:03d}" for i in range(SKUS)]
    return bench_seed(skus, lots=[(1, 60)], units=100_000_000, buyers=buyers)


def request(ref: str, n: int) -> bytes:
    """One storefront order: a microloan of a seeded buyer for one or two SKUs."""
    b, s = n % BUYERS, n % SKUS
    data = OrderRequested.model_validate(
        {
            "order_ref": ref,
            "buyer": {"id": f"bench-buyer-{b:04d}", "phone": f"+86139{b:08d}", "locale": "en"},
            "lines": [
                {"sku": f"BENCH-{s:03d}", "quantity": 1},
                {"sku": f"BENCH-{(s + 1) % SKUS:03d}", "quantity": 2},
            ],
            "payment": {"method": "microloan", "term_months": 3},
        }
    )
    return new_event(data, source="storefront/bench").to_json()


@dataclass
class Driver:
    """Publishes order requests and watches ``orders.events.v1`` for their outcome."""

    bootstrap: str
    producer: AIOKafkaProducer | None = None
    listener: AIOKafkaConsumer | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    count: int = 0
    sent: dict[str, float] = field(default_factory=dict)  # order_ref -> publish time
    done: dict[str, float] = field(default_factory=dict)  # order_ref -> confirmation time
    failed: dict[str, str] = field(default_factory=dict)  # order_ref -> event type
    on_done: Callable[[], None] | None = None
    # The measured windows: (what, start, end), perf_counter times like ``sent`` and ``done``.
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _pending: list[asyncio.Future[Any]] = field(default_factory=list)

    async def start(self) -> None:
        self.producer = make_producer(self.bootstrap, client_id="bench-storefront")
        await self.producer.start()
        self.listener = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="latest"
        )
        await self.listener.start()
        meta = await self.listener._client.fetch_all_metadata()
        topic = Topic.ORDER_EVENTS.value
        parts = [TopicPartition(topic, p) for p in meta.partitions_for_topic(topic) or ()]
        self.listener.assign(parts)
        await self.listener.seek_to_end(*parts)
        for tp in parts:
            await self.listener.position(tp)
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.listener is not None:
            with contextlib.suppress(asyncio.CancelledError):  # aiokafka, stopped early
                await self.listener.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def send(self) -> None:
        assert self.producer is not None
        self.count += 1
        ref = f"B-{self.run}-{self.count:08d}"
        value = request(ref, self.count)
        self.sent[ref] = time.perf_counter()
        self._pending.append(
            await self.producer.send(Topic.ORDER_REQUESTS.value, value, key=ref.encode())
        )
        if len(self._pending) >= 200:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)

    async def _listen(self) -> None:
        assert self.listener is not None
        terminal = {
            EventType.ORDER_CONFIRMED.value,
            EventType.ORDER_CANCELLED.value,
            EventType.ORDER_REJECTED.value,
        }
        while True:
            batches = await self.listener.getmany(timeout_ms=100, max_records=2000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    kind = event.get("type")
                    ref = event.get("data", {}).get("order_ref")
                    if kind not in terminal or ref not in self.sent or ref in self.done:
                        continue
                    if kind == EventType.ORDER_CONFIRMED.value:
                        self.done[ref] = now
                    else:
                        self.failed[ref] = kind
                        self.done[ref] = now
                    if self.on_done is not None:
                        self.on_done()

    def in_flight(self) -> int:
        return len(self.sent) - len(self.done)


def timeline(driver: Driver, bucket: float = 2.0) -> dict[str, Any]:
    """The run over time, from its first order: orders confirmed per second and the p99 of
    their latency in each ``bucket`` of seconds, and when each measured window ran (a
    warm-up, the idle window, the closed loop, each open-loop step), so that a plot shows
    whether a window ran steadily."""
    if not driver.sent:
        return {"bucket_seconds": bucket, "seconds": [], "phases": []}
    origin = min(driver.sent.values())
    confirmed: dict[int, list[float]] = {}
    for ref, t in driver.done.items():
        if ref not in driver.failed:
            confirmed.setdefault(int((t - origin) // bucket), []).append(t - driver.sent[ref])
    buckets = range(max(confirmed, default=-1) + 1)
    return {
        "bucket_seconds": bucket,
        "seconds": [round(i * bucket, 1) for i in buckets],
        "confirmed_per_second": [round(len(confirmed.get(i, [])) / bucket, 1) for i in buckets],
        "p99_ms": [percentiles(confirmed.get(i, []))["p99_ms"] for i in buckets],
        "phases": [
            {"what": what, "start_s": round(max(a - origin, 0.0), 1), "end_s": round(b - origin, 1)}
            for what, a, b in driver.phases
        ],
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


# --- counters sampled around a measurement ----------------------------------------------


DRIVER = "bench driver"  # this process, which sends the orders: measured, not the system


@dataclass
class Processes:
    """The processes whose CPU time is reported: services, Kafka, PostgreSQL, this driver."""

    groups: dict[str, list[psutil.Process]]

    @classmethod
    def find(cls, procs: system.ServiceProcesses, infra: system.Infrastructure) -> "Processes":
        groups = {name: [psutil.Process(p.pid)] for name, p in procs.procs.items()}
        groups["kafka"] = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "kafka.Kafka" in (p.info["cmdline"] or [])
            and any(f"kafka-{infra_port(infra)}" in part for part in p.info["cmdline"])
        ]
        assert infra.local_postgres is not None
        pid = int((infra.local_postgres.data_dir / "postmaster.pid").read_text().split()[0])
        groups["postgres"] = [psutil.Process(pid)]
        groups[DRIVER] = [psutil.Process()]
        return cls(groups)

    def cpu_seconds(self) -> dict[str, float]:
        """Each group's CPU so far: its processes', and (a root's ``children_*``) that of
        the children its roots reaped (PostgreSQL's backends and autovacuum workers that
        exited: they were not counted, or were subtracted when they exited between two
        samples). A process gone meanwhile is left out, not the rest of its group."""
        out: dict[str, float] = {}
        for name, roots in self.groups.items():
            total = 0.0
            for root in roots:
                members = [root] if name == DRIVER else [root, *_children(root)]
                for p in members:
                    try:
                        t = p.cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    total += t.user + t.system
                    if p is root:
                        total += t.children_user + t.children_system
            out[name] = total
        return out


def _children(root: psutil.Process) -> list[psutil.Process]:
    try:
        found: list[psutil.Process] = root.children(True)
    except psutil.NoSuchProcess:
        return []
    return found


def infra_port(infra: system.Infrastructure) -> int:
    return int(infra.kafka_bootstrap.rsplit(":", 1)[1])


class Offsets:
    """End offsets of topics, summed over partitions, from one long-lived client."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def ends(self, topics: tuple[str, ...] = ALL_TOPICS) -> dict[str, int]:
        meta = await self.consumer._client.fetch_all_metadata()  # topics may be new
        parts = [TopicPartition(t, p) for t in topics for p in meta.partitions_for_topic(t) or ()]
        out = dict.fromkeys(topics, 0)
        for tp, offset in (await self.consumer.end_offsets(parts)).items():
            out[tp.topic] += offset
        return out


async def database_durability(database_url: str, synchronous_commit: str | None) -> dict[str, str]:
    """Set the database's ``synchronous_commit`` for the sessions opened from now on (or,
    with None, take back what an earlier run set: the cluster is kept between runs), and read
    back what a new session gets."""
    # No pool: the second connection is a new session, which gets the setting.
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            database = '"' + str(await conn.scalar(text("select current_database()"))) + '"'
            setting = (
                f"set synchronous_commit = {synchronous_commit}"
                if synchronous_commit
                else "reset synchronous_commit"
            )
            await conn.execute(text(f"alter database {database} {setting}"))
        async with engine.connect() as conn:
            return {
                f"postgres_{name}": str(await conn.scalar(text(f"show {name}")))
                for name in ("fsync", "synchronous_commit")
            }
    finally:
        await engine.dispose()


async def analyze(database_url: str) -> None:
    """``ANALYZE`` every table of the database."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("analyze"))
    finally:
        await engine.dispose()


async def counted_statements(infra: system.Infrastructure, wanted: bool) -> bool:
    """Load ``pg_stat_statements`` into the local cluster (``--statements``), or take it out
    again when a kept cluster still has it from such a run: it costs the headline a little.
    PostgreSQL restarts only when the setting changes; a server named by ``DATABASE_URL`` is
    left as it is. Whether the library is loaded now."""
    engine = create_async_engine(infra.database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            loaded = "pg_stat_statements" in str(
                await conn.scalar(text("show shared_preload_libraries"))
            )
            change = loaded != wanted and infra.local_postgres is not None
            if change:
                setting = "= 'pg_stat_statements'" if wanted else "to default"
                await conn.execute(text(f"alter system set shared_preload_libraries {setting}"))
    finally:
        await engine.dispose()
    if change:
        assert infra.local_postgres is not None
        infra.local_postgres.restart()
        loaded = wanted
    if wanted and not loaded:
        raise SystemExit(
            "--statements: the server named by DATABASE_URL must preload pg_stat_statements"
        )
    if wanted:
        engine = create_async_engine(infra.database_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text("create extension if not exists pg_stat_statements"))
        finally:
            await engine.dispose()
    return loaded


async def database_counters(database_url: str, statements: bool) -> tuple[int, int]:
    """The database's commits so far and, with ``pg_stat_statements`` loaded, the top-level
    statements it has run (the bench's own few queries included in both)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            n = await conn.scalar(
                text("select xact_commit from pg_stat_database where datname = current_database()")
            )
            calls = statements and await conn.scalar(
                text(
                    "select coalesce(sum(calls), 0) from pg_stat_statements where toplevel"
                    " and dbid = (select oid from pg_database where datname = current_database())"
                )
            )
    finally:
        await engine.dispose()
    return int(n or 0), int(calls or 0)


async def consumed(ports: list[int], token: str) -> dict[str, float]:
    """``caravan_records_consumed_total`` of every service, by outcome."""
    out: dict[str, float] = {}
    pattern = re.compile(r"^caravan_records_consumed_total\{(.*)\} ([0-9.e+]+)$", re.M)
    async with httpx.AsyncClient(timeout=10, headers=bearer_headers(token)) as client:
        for port in ports:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
            response.raise_for_status()  # never a silent zero
            body = response.text
            for labels, value in pattern.findall(body):
                outcome = re.search(r'outcome="([^"]+)"', labels)
                key = outcome.group(1) if outcome else "?"
                out[key] = out.get(key, 0.0) + float(value)
    return out


@dataclass
class Sample:
    wall: float
    cpu: dict[str, float]
    offsets: dict[str, int]
    commits: int
    statements: int  # 0 unless --statements
    consumed: dict[str, float]


@dataclass
class Meter:
    infra: system.Infrastructure
    offsets: Offsets
    processes: Processes
    metric_ports: list[int]
    token: str  # with the ``metrics`` scope
    services: list[str]  # their consumer groups are ``consumer_group(name)``
    statements: bool  # pg_stat_statements counts (--statements)

    async def sample(self) -> Sample:
        return Sample(
            time.perf_counter(),
            self.processes.cpu_seconds(),
            await self.offsets.ends(),
            *await database_counters(self.infra.database_url, self.statements),
            await consumed(self.metric_ports, self.token),
        )

    @staticmethod
    def between(a: Sample, b: Sample, orders: int) -> dict[str, Any]:
        wall = b.wall - a.wall
        per = max(orders, 1)
        records = sum(b.offsets.get(t, 0) - a.offsets.get(t, 0) for t in b.offsets)
        steps = {k: v - a.consumed.get(k, 0.0) for k, v in b.consumed.items()}
        cpu = {k: v - a.cpu.get(k, 0.0) for k, v in b.cpu.items()}  # seconds, by process
        return {
            "cpu_percent": {k: round(100 * v / wall, 1) for k, v in cpu.items()},
            "cpu_percent_total": round(100 * sum(cpu.values()) / wall, 1),
            # What an order costs the system, the bench's own driver left out.
            "cpu_ms_per_order": {k: round(1000 * v / per, 2) for k, v in cpu.items()},
            "cpu_ms_per_order_system": round(
                1000 * sum(v for k, v in cpu.items() if k != DRIVER) / per, 2
            ),
            "kafka_records_per_order": round(records / per, 2),
            "kafka_records_by_topic": {
                t: b.offsets[t] - a.offsets.get(t, 0)
                for t in b.offsets
                if b.offsets[t] != a.offsets.get(t, 0)
            },
            "db_commits_per_order": round((b.commits - a.commits) / per, 2),
            **(
                {"db_statements_per_order": round((b.statements - a.statements) / per, 2)}
                if b.statements
                else {}
            ),
            "consumer_steps_per_order": round(steps.get("handled", 0.0) / per, 2),
            "records_consumed_per_order": round(sum(steps.values()) / per, 2),
        }


# --- the ceilings -----------------------------------------------------------------------


def pgbench(database_url: str, clients: int, seconds: int) -> float:
    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    subprocess.run(
        [
            str(PG_BIN / "psql"),
            url,
            "-qc",
            "create table if not exists bench_commit "
            "(id bigserial primary key, v int not null, at timestamptz not null default now())",
        ],
        check=True,
        capture_output=True,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("insert into bench_commit (v) values (1);\n")
    try:
        done = subprocess.run(
            [
                str(PG_BIN / "pgbench"),
                "-n",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                script.name,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(script.name)
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if found is None:
        raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


async def create_topics(bootstrap: str, names: list[str], delete: bool = False) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if delete:
            await admin.delete_topics([n for n in names if n in existing])
            return
        new = [NewTopic(n, 3, 1) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def fill(bootstrap: str, topic: str, value: bytes, count: int) -> float:
    """Produce ``count`` records as fast as a durable producer can; records per second."""
    producer = make_producer(bootstrap, client_id="bench-ceiling")
    await producer.start()
    try:
        started = time.perf_counter()
        for first in range(0, count, 1000):
            futures = [
                await producer.send(topic, value, key=str(n).encode())
                for n in range(first, min(count, first + 1000))
            ]
            await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def drain(bootstrap: str, topic: str, count: int) -> float:
    """Consume ``count`` records from the start of ``topic``; records per second."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got, started, n_first = 0, 0.0, 0
        while got < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            n = sum(len(r) for r in batches.values())
            if n and not started:
                started = time.perf_counter()
                n_first = n
            got += n
        return (got - n_first) / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def relay_floor(
    bootstrap: str, offsets: Offsets, value: bytes, count: int, log: Path
) -> float:
    """Records/s of a no-op FastStream consume-and-publish relay in its own process."""
    relay_in, relay_out = relay_topics(RUN)
    await fill(bootstrap, relay_in, value, count)
    before = (await offsets.ends((relay_out,)))[relay_out]
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not waited on here)
            [sys.executable, __file__, "--relay-floor", bootstrap, "--run", RUN],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60 + count / 20
        while time.monotonic() < deadline and proc.poll() is None:
            if (await offsets.ends((relay_out,)))[relay_out] - before >= count:
                return records_per_second(await create_times(bootstrap, relay_out, count))
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the no-op relay did not relay {count} records; see {log}")
    finally:
        proc.terminate()
        proc.wait(30)


async def create_times(bootstrap: str, topic: str, count: int) -> list[int]:
    """The create times (ms, set by the producer as it took each record) of the first
    ``count`` records of ``topic``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        times: list[int] = []
        while len(times) < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            times += [r.timestamp for records in batches.values() for r in records]
        return times[:count]
    finally:
        await consumer.stop()


def records_per_second(create_times: list[int]) -> float:
    """How fast records were produced, from their create times: the relay's own pace, from
    its first record to its last. It was timed by polling the topic's end every 0.2 s, which
    counted up to 0.2 s of waiting in runs of a second or so (8 % slow at 8,000 records/s)."""
    span = (max(create_times) - min(create_times)) / 1000
    if span <= 0:
        raise RuntimeError(f"{len(create_times)} records in under a millisecond: too few")
    return (len(create_times) - 1) / span


def run_relay_floor(bootstrap: str, run: str) -> None:
    """The no-op relay: FastStream consuming as the services do (batches of up to
    ``CARAVAN_CONSUMER_BATCH_SIZE`` records, offsets committed after the handler) and
    publishing each batch with a durable producer, waiting for every acknowledgement."""
    import uvloop
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker, KafkaMessage

    from shared.messaging.consumer import wait_for_records

    settings = Settings()
    relay_in, relay_out = relay_topics(run)

    async def main() -> None:
        broker = KafkaBroker(
            bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            logger=None,  # the services log no line per record either
        )

        batches = broker.subscriber(
            relay_in,
            group_id="bench-relay-floor",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            batch=True,
            max_records=settings.consumer_batch_size,
        )
        wait_for_records(batches, settings.consumer_batch_timeout_ms)  # as the services' do

        @batches
        async def relay(msg: KafkaMessage) -> None:
            records = msg.raw_message
            assert isinstance(records, tuple)
            sent = [await broker.publish(r.value, relay_out, no_confirm=True) for r in records]
            await asyncio.gather(*sent)  # every acknowledgement, before the offsets commit

        await broker.start()
        try:
            await asyncio.Event().wait()
        finally:
            await broker.stop()

    uvloop.run(main())


async def ceilings(
    infra: system.Infrastructure, offsets: Offsets, args: argparse.Namespace, value: bytes
) -> dict[str, Any]:
    await create_topics(infra.kafka_bootstrap, [CEILING_TOPIC, *relay_topics(RUN)])
    say(f"ceiling: pgbench, {args.pg_clients} clients, {args.ceiling_seconds} s ...")
    tps = await asyncio.to_thread(
        pgbench, infra.database_url, args.pg_clients, args.ceiling_seconds
    )
    say(f"  PostgreSQL commits/s: {tps:.0f} (load {load_1m()})")
    produce = await fill(infra.kafka_bootstrap, CEILING_TOPIC, value, args.ceiling_records)
    say(f"  Kafka produce records/s: {produce:.0f} ({len(value)} B, acks=all, idempotent)")
    consume = await drain(infra.kafka_bootstrap, CEILING_TOPIC, args.ceiling_records)
    say(f"  Kafka consume records/s: {consume:.0f}")
    floor = await relay_floor(
        infra.kafka_bootstrap, offsets, value, args.relay_records, args.logs / "relay-floor.log"
    )
    say(f"  FastStream no-op relay records/s: {floor:.0f} (load {load_1m()})")
    await create_topics(infra.kafka_bootstrap, list(relay_topics(RUN)), delete=True)
    return {
        "postgres_commits_per_second": round(tps, 1),
        "postgres_clients": args.pg_clients,
        "kafka_produce_records_per_second": round(produce, 1),
        "kafka_consume_records_per_second": round(consume, 1),
        "relay_floor_records_per_second": round(floor, 1),
        "record_bytes": len(value),
        "load_average_1m": load_1m(),
    }


# --- the load ---------------------------------------------------------------------------


async def progress(driver: Driver, label: str, stop: asyncio.Event) -> None:
    last, last_t = len(driver.done), time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(5)
        now = time.perf_counter()
        rate = (len(driver.done) - last) / (now - last_t)
        last, last_t = len(driver.done), now
        say(
            f"  {label}: sent {len(driver.sent)}, done {len(driver.done)}, "
            f"in flight {driver.in_flight()}, {rate:.0f}/s, load {load_1m()}"
        )


async def measured(
    meter: Meter,
    driver: Driver,
    label: str,
    seconds: float,
    load: Callable[[], Coroutine[Any, Any, None]],
) -> dict[str, Any]:
    """Run ``load`` for ``seconds``; figures of the orders confirmed in that window."""
    before = await meter.sample()
    sent_before = set(driver.sent)
    stop = asyncio.Event()
    ticker = asyncio.create_task(progress(driver, label, stop))
    started = time.perf_counter()
    loader = asyncio.create_task(load())
    await asyncio.sleep(seconds)
    ended = time.perf_counter()
    driver.phases.append((label, started, ended))
    loader.cancel()
    await asyncio.gather(loader, return_exceptions=True)
    after = await meter.sample()
    behind = await backlog(meter.infra, meter.services)
    stop.set()
    ticker.cancel()
    window = [(ref, t) for ref, t in driver.done.items() if started <= t <= ended]
    confirmed = [(r, t) for r, t in window if r not in driver.failed]
    latencies = [t - driver.sent[r] for r, t in confirmed]
    new = [r for r in driver.sent if r not in sent_before]
    return {
        "seconds": round(ended - started, 1),
        "sent": len(new),
        "confirmed": len(confirmed),
        "failed": sum(1 for r, _ in window if r in driver.failed),
        "confirmed_per_second": round(len(confirmed) / (ended - started), 1),
        "latency": percentiles(latencies),
        "load_average_1m": load_1m(),
        "backlog_at_end": sum(behind.values()),
        "backlog_at_end_by_service": {k: v for k, v in behind.items() if v},
        **Meter.between(before, after, len(confirmed)),
    }


async def backlog(infra: system.Infrastructure, services: list[str]) -> dict[str, int]:
    """What is left to do, by who has it: each service's records its consumer group has yet
    to commit (up to a commit interval of them handled already), and texts due but unsent
    (``texts``)."""
    behind: dict[str, int] = {}
    for name in services:
        lag = 0
        async with kafka_admin.group_client(infra.kafka_bootstrap, consumer_group(name)) as client:
            for topic in ALL_TOPICS:
                with contextlib.suppress(LookupError):  # a topic not created (yet)
                    offsets = await kafka_admin.offsets(client, topic)
                    lag += sum(p.lag for p in offsets if p.committed is not None)
        behind[name] = lag
    engine = create_async_engine(infra.database_url)
    try:
        async with engine.connect() as conn:
            texts = await conn.scalar(
                text(
                    "select count(*) from notifications.sms where status in"
                    " ('pending', 'sending') and next_attempt_at <= now()"
                )
            )
    finally:
        await engine.dispose()
    behind["texts"] = int(texts or 0)
    return behind


async def catch_up(
    infra: system.Infrastructure, services: list[str], timeout: float = 180
) -> float:
    """Wait until the services have caught up with everything sent so far (notifications
    lags behind the saga under load, and its catching up would be charged to the next
    step); how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left = {name: n for name, n in (await backlog(infra, services)).items() if n}
        if not left:
            break
        say(f"  waiting for the services to catch up: {left}")
        await asyncio.sleep(2)
    return round(time.monotonic() - started, 1)


async def settle(driver: Driver, timeout: float) -> int:
    """Wait until every order sent is done (or ``timeout``); how many were not."""
    await driver.flush()
    deadline = time.monotonic() + timeout
    while driver.in_flight() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return driver.in_flight()


async def nothing() -> None:
    """The load of the idle step."""
    await asyncio.Event().wait()


async def closed_loop(
    meter: Meter, driver: Driver, window: int, seconds: float, what: str = "closed loop"
) -> dict[str, Any]:
    slots = asyncio.Semaphore(window)
    driver.on_done = slots.release

    async def load() -> None:
        while True:
            await slots.acquire()
            await driver.send()
            if slots.locked():
                await driver.flush()

    try:
        result = await measured(meter, driver, f"{what} ({window} in flight)", seconds, load)
    finally:
        driver.on_done = None
    result["in_flight"] = window
    result["unfinished_after_settle"] = await settle(driver, 60)
    return result


async def open_loop(meter: Meter, driver: Driver, rate: float, seconds: float) -> dict[str, Any]:
    sent_before = set(driver.sent)

    async def load() -> None:
        started, n = time.perf_counter(), 0
        while True:
            due = int((time.perf_counter() - started) * rate)
            while n < due:
                await driver.send()
                n += 1
            await driver.flush()
            await asyncio.sleep(0.005)

    result = await measured(meter, driver, f"open loop {rate:.0f}/s", seconds, load)
    unfinished = await settle(driver, max(10.0, seconds / 2))
    # Latency of every order offered in the step, those confirmed after it ended included.
    refs = [r for r in driver.sent if r not in sent_before]
    latencies = [driver.done[r] - driver.sent[r] for r in refs if r in driver.done]
    result["offered_per_second"] = round(rate, 1)
    result["latency"] = percentiles(latencies)
    result["unfinished_after_settle"] = unfinished
    return result


def ran_away(step: dict[str, Any], max_p99_ms: float, commit_interval_ms: float) -> str | None:
    p99 = step["latency"]["p99_ms"]
    if step["unfinished_after_settle"] > 0.01 * max(step["sent"], 1):
        return "orders still unfinished after the step"
    if p99 is None or p99 > max_p99_ms:
        return f"p99 {p99} ms over {max_p99_ms:.0f} ms"
    if step["confirmed_per_second"] < 0.85 * step["offered_per_second"]:
        return "confirmed rate fell behind the offered rate (lag grows)"
    # A service off the saga's path (notifications) can fall behind while orders are still
    # confirmed in time: more left to handle at the end than the records of max_p99_ms of load
    # (and of a commit interval: a group's committed offsets trail what it has handled).
    allowed = (
        step["offered_per_second"]
        * step["kafka_records_per_order"]
        * (max_p99_ms + commit_interval_ms)
        / 1000
    )
    if step["backlog_at_end"] > allowed:
        behind = step["backlog_at_end_by_service"]
        return f"{step['backlog_at_end']} records and texts behind at the end {behind} (lag grows)"
    return None


def service_env(args: argparse.Namespace) -> dict[str, str]:
    """The services' settings of this run: the defaults, and any ``--set NAME=VALUE``."""
    return {"CARAVAN_ENVIRONMENT": "test", **dict(s.split("=", 1) for s in args.set)}


def commit_interval_ms(args: argparse.Namespace) -> float:
    """How long the services' groups may take to commit what they handled, this run."""
    default = Settings.model_fields["consumer_commit_interval_ms"].default
    return float(service_env(args).get("CARAVAN_CONSUMER_COMMIT_INTERVAL_MS", default))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = args.base
    if args.fresh and base.exists():
        say(f"--fresh: removing {base} (a cluster kept from earlier runs)")
        shutil.rmtree(base)
    args.logs = base / "logs"
    args.logs.mkdir(parents=True, exist_ok=True)
    say(
        f"starting Kafka :{args.kafka_port} and PostgreSQL :{args.postgres_port} (load {load_1m()})"
    )
    load_at_start = load_1m()
    infra = system.start_infrastructure(
        base_dir=base, kafka_port=args.kafka_port, postgres_port=args.postgres_port
    )
    procs = system.ServiceProcesses(
        system.service_env(infra, args.http_port, **service_env(args)), args.logs, args.processes
    )
    driver = Driver(infra.kafka_bootstrap)
    offsets = Offsets(infra.kafka_bootstrap)
    report: dict[str, Any] = {"load_average_1m_at_start": load_at_start}
    try:
        # loaded, the library costs every figure a little; it counts with --statements only
        report["pg_stat_statements_loaded"] = await counted_statements(infra, args.statements)
        await system.prepare(infra.kafka_bootstrap, infra.database_url)
        await load_again(infra.database_url, seed())
        relaxed = "off" if args.relax_synchronous_commit else None
        report["durability"] = {
            "producer_acks": "all",  # make_producer: the services' and the bench's
            "idempotent_producers": True,
            **await database_durability(infra.database_url, relaxed),
            "note": args.label,
        }
        sample = request("B-sample-00000000", 0)
        await offsets.start()
        # The broker's count, not the setting's: a kept cluster (no --fresh) keeps its own.
        requests = await kafka_admin.partitions_of(offsets.consumer, [Topic.ORDER_REQUESTS.value])
        if not args.quick:
            report["ceilings"] = await ceilings(infra, offsets, args, sample)

        say(f"starting the five services in {args.processes} processes ...")
        procs.start()
        report["processes"] = list(procs.procs)
        await asyncio.to_thread(system.wait_ready, procs)
        ports = [args.http_port + i for i in range(len(system.HTTP_PORT_VARS))]
        token = await issue_token(infra.database_url, f"bench-{RUN}", ["metrics"])
        meter = Meter(
            infra,
            offsets,
            Processes.find(procs, infra),
            ports,
            token,
            procs.services(),
            args.statements,
        )
        await driver.start()
        # The consumer groups settle (several rebalances while the services start) and the
        # pools fill: warm up until orders flow steadily: three windows' worth confirmed in
        # 10 s with no order stalled, or (a window too big for that) two warm-ups in a row
        # confirming within 15 % of each other.
        previous = None
        for _ in range(12):
            say("warming up (closed loop, 10 s) ...")
            warm = await closed_loop(meter, driver, args.window, 10, "warming up")
            done = warm["confirmed"]
            if done >= 3 * args.window and warm["latency"]["max_ms"] < 5000:
                break
            if previous and done and abs(done - previous) <= 0.15 * previous:
                break
            previous = done
        # Statistics of the tables the warm-up filled, as autovacuum's first pass gives a new
        # cluster a minute or so after it starts and a running system always has: until
        # then the services' statements are planned without them, and the pipeline ran at
        # three quarters of the rate it reached after (HISTORY.md, 2026-12-02 09:46).
        await analyze(infra.database_url)

        await settle(driver, 60)
        names = procs.services()
        report["caught_up_before_idle_seconds"] = await catch_up(infra, names)
        say(f"idle, {args.idle_seconds} s (what the system burns with no orders) ...")
        idle = await measured(meter, driver, "idle", args.idle_seconds, nothing)
        report["idle_cpu_percent"] = idle["cpu_percent"]
        report["idle_cpu_percent_total"] = idle["cpu_percent_total"]
        say(f"  idle CPU {idle['cpu_percent_total']} %: {idle['cpu_percent']}")

        say(f"closed loop, {args.window} orders in flight, {args.duration} s ...")
        waited = await catch_up(infra, names)
        closed = await closed_loop(meter, driver, args.window, args.duration)
        closed["caught_up_before_seconds"] = waited
        say(
            f"  {closed['confirmed_per_second']} confirmed orders/s, latency {closed['latency']},"
            f" {closed['cpu_ms_per_order_system']} ms of CPU per order,"
            f" behind at the end: {closed['backlog_at_end_by_service'] or 0}"
        )
        report["closed_loop"] = closed

        rates = args.rates or (
            [] if args.quick else [round(f * closed["confirmed_per_second"]) for f in FRACTIONS]
        )
        steps: list[dict[str, Any]] = []
        for rate in [r for r in rates if r > 0]:
            say(f"open loop, {rate} orders/s offered, {args.step_seconds} s ...")
            waited = await catch_up(infra, names)
            step = await open_loop(meter, driver, float(rate), args.step_seconds)
            step["caught_up_before_seconds"] = waited
            why = ran_away(step, args.max_p99_ms, commit_interval_ms(args))
            step["ran_away"] = why
            steps.append(step)
            say(
                f"  {step['confirmed_per_second']} confirmed/s, latency {step['latency']},"
                f" {step['cpu_ms_per_order_system']} ms of CPU per order"
                + (f"; ran away: {why}" if why else "")
            )
            if why:
                break
            procs.check_alive()
        report["open_loop"] = steps
        report["failed_orders"] = len(driver.failed)
        report["timeline"] = timeline(driver)
    finally:
        await driver.stop()
        await offsets.stop()
        procs.stop()
        infra.stop()

    closed = report["closed_loop"]
    rate = closed["confirmed_per_second"]
    c = report.get("ceilings")
    report["ratios"] = c and {
        "framework": round(
            rate * closed["consumer_steps_per_order"] / c["relay_floor_records_per_second"], 3
        ),
        "database": round(
            rate * closed["db_commits_per_order"] / c["postgres_commits_per_second"], 3
        ),
    }
    sustained = [s for s in report["open_loop"] if not s["ran_away"]]
    report["headline"] = {
        "label": args.label,
        "confirmed_orders_per_second_closed_loop": rate,
        "max_sustained_open_loop_per_second": max(
            (s["offered_per_second"] for s in sustained), default=None
        ),
        **{f"closed_loop_{k}": v for k, v in closed["latency"].items()},
    }
    report.update(
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_end": load_1m(),
        },
        service_settings=service_env(args),
        kafka=infra.kafka_path,
        postgres=infra.postgres_path,
        partitions=len(requests),
    )
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["open_loop"]
    offered = [s["offered_per_second"] for s in steps]
    over_time = report.get("timeline")
    if over_time and not over_time["seconds"]:
        over_time = None  # a run without orders: nothing to show over time
    rows = 3 if over_time else 2
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.5 * rows))
    top, bottom = axes[0], axes[1]
    bottom.sharex(top)
    top.plot(offered, [s["confirmed_per_second"] for s in steps], "o-", label="confirmed")
    top.plot(offered, offered, ":", color="grey", label="offered")
    top.axhline(
        report["closed_loop"]["confirmed_per_second"],
        ls="--",
        color="C3",
        label=f"closed loop, {report['closed_loop']['in_flight']} in flight",
    )
    title = f"Caravan pipeline, {report['headline']['label']}\n{report['measured_at']}"
    top.set(ylabel="orders / s", title=title)
    top.legend()
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        bottom.plot(offered, [s["latency"][q] for s in steps], "o-", label=q[:3])
    bottom.set(xlabel="offered orders / s (open loop)", ylabel="latency, ms", yscale="log")
    bottom.legend()
    if over_time:
        plot_timeline(axes[2], over_time)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")


def plot_timeline(ax: Any, over_time: dict[str, Any]) -> None:
    """Orders confirmed per second over the run, and their p99, with each measured window
    shaded and named above it."""
    seconds = over_time["seconds"]
    ax.plot(seconds, over_time["confirmed_per_second"], drawstyle="steps-post", label="confirmed")
    ax.set(xlabel="seconds since the first order", ylabel="orders / s")
    mark_windows(
        ax,
        [
            (p["what"].split(" (")[0].removeprefix("open loop "), p["start_s"], p["end_s"])
            for p in over_time["phases"]
        ],
    )
    latency = ax.twinx()
    p99 = [v if v is not None else float("nan") for v in over_time["p99_ms"]]
    latency.plot(seconds, p99, ":", color="C2", drawstyle="steps-post", label="p99")
    latency.set(ylabel="p99 latency, ms", yscale="log")
    ax.legend(loc="upper left", fontsize=8)
    latency.legend(loc="lower left", fontsize=8)
    ax.set_title(f"over time ({over_time['bucket_seconds']:g} s buckets)", fontsize=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30, help="closed-loop seconds")
    parser.add_argument("--step-seconds", type=float, default=20, help="open-loop step seconds")
    parser.add_argument("--window", type=int, default=64, help="closed-loop orders in flight")
    parser.add_argument("--idle-seconds", type=float, default=10, help="idle CPU window")
    parser.add_argument("--rates", type=float, nargs="*", help="open-loop rates (orders/s)")
    parser.add_argument("--max-p99-ms", type=float, default=2000)
    parser.add_argument("--pg-clients", type=int, default=SUBSCRIBERS)
    parser.add_argument("--ceiling-seconds", type=int, default=10)
    parser.add_argument("--ceiling-records", type=int, default=50_000)
    parser.add_argument("--relay-records", type=int, default=10_000)
    parser.add_argument("--kafka-port", type=int, default=23092)
    parser.add_argument("--postgres-port", type=int, default=15435)
    parser.add_argument("--http-port", type=int, default=19080)
    parser.add_argument("--label", help="what the run is (default: headline or relaxed)")
    parser.add_argument(
        "--relax-synchronous-commit",
        action="store_true",
        help="PostgreSQL's synchronous_commit off for the run: reported apart, as relaxed",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a service setting"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="no ceilings, and no open loop unless --rates names its steps: to compare a change",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="remove the bench's Kafka and PostgreSQL data first (.cache/bench-<kafka port>)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="load pg_stat_statements and report top-level statements per order",
    )
    add_processes(parser, "pipeline")
    parser.add_argument("--output", type=Path, help="default: bench/results/pipeline.json")
    parser.add_argument("--relay-floor", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    relaxed = args.relax_synchronous_commit
    suffix = processes_suffix(args.processes)  # "" in the design's one process each
    args.label = args.label or (
        ("relaxed: synchronous_commit off" if relaxed else "headline: durable settings")
        + (f"; the services in {args.processes} processes" if suffix else "")
    )
    stem = ("pipeline-relaxed" if relaxed else "pipeline") + suffix
    args.output = args.output or RESULTS / f"{stem}.json"
    if args.relay_floor:
        run_relay_floor(args.relay_floor, args.run)
        return
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections at start
    system.stop_on_signals()  # a SIGTERM still stops what the run started
    args.base = CACHE / f"bench-{args.kafka_port}"
    with system.run_alone(args.base):
        report = asyncio.run(bench(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {args.output}")
    if report["open_loop"]:
        plot(report, args.output.with_suffix(".png"))
        say(f"wrote {args.output.with_suffix('.png')}")
    print(json.dumps({"headline": report["headline"], "ratios": report["ratios"]}, indent=2))


if __name__ == "__main__":
    main()

"""Fault injectors on the running system, and the wait for a run's orders to end. Used by the
tests in this folder and by ``bench/soak.py``."""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from caravan import system
from caravan.ops.replay import replay
from caravan.reliability.history import History, Injected, Violation, check, read_database
from caravan.reliability.load import Load, texts_settled
from shared.events.registry import PoisonRecord, parse_record
from shared.faults import FAILPOINT_AFTER_VAR, FAILPOINT_VAR, KILLED_EXIT_CODE, RELAY_AFTER_PUBLISH
from shared.messaging import kafka_admin
from shared.topics import ALL_TOPICS, EventType, Topic, consumer_group
from tests.harness import System

DLQ_TOPICS = frozenset(t.dlq for t in Topic)


@dataclass
class FaultLog:
    """What was done to the system, and when (seconds since the run started)."""

    started: float = field(default_factory=time.monotonic)
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    injected: list[Injected] = field(default_factory=list)  # poison records, where they landed
    republished: int = 0  # events a killed relay published twice

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, name: str, began: float) -> None:
        self.windows.append((name, round(began, 2), round(self.now(), 2)))

    def counts(self) -> dict[str, int]:
        return dict(Counter(name.split(":")[0] for name, _, _ in self.windows))


async def kill_and_restart(
    caravan: System, names: tuple[str, ...], faults: FaultLog, relay_dies_in: str | None = None
) -> int:
    """``kill -9`` services mid-load, then start them again. With ``relay_dies_in`` (one of
    ``names``), that service first comes back with the relay's failpoint armed: it dies (137)
    between publishing a batch and marking it sent, and is started once more, unarmed.
    Returns how many of its records (events or dead letters) were then published twice (0
    without ``relay_dies_in``)."""
    began = faults.now()
    seen = len(caravan.log.records)
    hosts = caravan.procs.hosts(names)  # with fewer processes, those hosting ``names``
    assert sorted(caravan.procs.services(hosts)) == sorted(names), hosts
    for key in hosts:
        assert caravan.kill(key) == -9
    faults.add(f"kill -9:{'+'.join(names)}", began)
    await asyncio.sleep(0.5)
    if relay_dies_in is not None:
        began = faults.now()
        armed = {FAILPOINT_VAR: RELAY_AFTER_PUBLISH, FAILPOINT_AFTER_VAR: "3"}
        await caravan.relaunch((relay_dies_in,), **armed)
        proc = caravan.procs.procs.pop(relay_dies_in)
        code = await asyncio.to_thread(proc.wait, 90)
        assert code == KILLED_EXIT_CODE, code
        faults.add(f"relay killed after publish:{relay_dies_in}", began)
    caravan.procs.start(names)
    await asyncio.to_thread(system.wait_ready, caravan.procs)
    if relay_dies_in is None:
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = Counter(
            identity
            for r in caravan.log.records[seen:]
            if (identity := _published_by(r, relay_dies_in)) is not None
        )
        twice = sum(1 for n in ids.values() if n > 1)
        if twice:
            return twice
        await asyncio.sleep(0.5)
    return 0


def _published_by(record: ConsumerRecord, service: str) -> tuple[str, ...] | None:
    """What names ``record`` if ``service``'s relay published it: an event's id, or a dead
    letter's group and coordinates (its relay batch may hold only dead letters)."""
    if record.topic in DLQ_TOPICS:
        headers = {k: v.decode() for k, v in record.headers}
        if headers.get("dlq.group") != consumer_group(service):
            return None
        return (record.topic, headers["dlq.topic"], headers["dlq.partition"], headers["dlq.offset"])
    source = f'"source":"caravan/{service}"'.encode()
    if record.value is None or source not in record.value:
        return None
    return (parse_record(Topic(record.topic), record.value).envelope.id,)


async def restart_postgres_immediate(caravan: System, faults: FaultLog) -> None:
    """PostgreSQL stopped as by a crash (``pg_ctl -m immediate``): recovery on start."""
    pg = caravan.infra.local_postgres
    assert pg is not None, "this fault needs the project's own PostgreSQL"
    began = faults.now()
    await asyncio.to_thread(pg.restart, "immediate")
    assert caravan.engine is not None
    await caravan.engine.dispose()  # the test's own pooled connections died with it
    faults.add("postgres restart -m immediate", began)
    # The services' pooled connections died too: their HTTP APIs answer 503 (retry) while
    # they notice, never 500, and then 200.
    for service in ("orders", "inventory"):
        async with caravan.api(service) as http:
            path = "/orders?buyer_id=x&limit=1" if service == "orders" else "/stock"
            codes = [(await http.get(path)).status_code for _ in range(3)]
        assert set(codes) <= {200, 503} and codes[-1] == 200, (service, codes)


async def scale_inventory(caravan: System, faults: FaultLog, hold: float = 6.0) -> None:
    """Inventory 1 -> 3 -> 1 instances under load: two rebalances each way."""
    began = faults.now()
    for instance in (2, 3):
        caravan.procs.start(("inventory",), instance=instance)
    await asyncio.sleep(hold)
    await asyncio.to_thread(caravan.procs.stop, ["inventory-2", "inventory-3"])
    faults.add("rebalance:inventory 1-3-1", began)


@dataclass
class Outcomes:
    """How far the run's requests have come, read from the recorded topics."""

    placed: dict[str, str] = field(default_factory=dict)  # order_ref -> order_id
    rejected: set[str] = field(default_factory=set)
    ended: dict[str, str] = field(default_factory=dict)  # order_id -> terminal type or reason
    seen: int = 0

    def update(self, caravan: System, source: str) -> None:
        records = caravan.log.records
        new, self.seen = records[self.seen :], len(records)
        for record in new:
            if record.topic != Topic.ORDER_EVENTS.value:
                continue
            try:
                env = parse_record(Topic.ORDER_EVENTS, record.value).envelope
            except PoisonRecord:
                continue
            data = env.data
            if env.type == EventType.ORDER_PLACED.value and data.get("source") == source:
                self.placed[data["order_ref"]] = data["order_id"]
            elif env.type == EventType.ORDER_REJECTED.value and data.get("source") == source:
                self.rejected.add(data["order_ref"])
            elif env.type == EventType.ORDER_CONFIRMED.value:
                self.ended.setdefault(data["order_id"], "confirmed")
            elif env.type == EventType.ORDER_CANCELLED.value:
                self.ended.setdefault(data["order_id"], f"cancelled:{data.get('reason')}")

    def open(self, load: Load) -> list[str]:
        """Refs not yet placed or rejected, and placed orders not yet ended."""
        return [
            ref
            for ref in load.sent
            if ref not in self.rejected
            and (ref not in self.placed or self.placed[ref] not in self.ended)
        ]

    def tally(self) -> dict[str, int]:
        mine = set(self.placed.values())
        return dict(Counter(v for k, v in self.ended.items() if k in mine))


async def all_ended(caravan: System, load: Load, outcomes: Outcomes, timeout: float) -> list[str]:
    """Wait until every request of the load has ended; the refs still open at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        outcomes.update(caravan, load.source)
        left = outcomes.open(load)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


async def end_offsets(bootstrap: str) -> dict[str, dict[int, int]]:
    """Where every topic ends now (dead letters of records before this are not a run's)."""
    async with kafka_admin.group_client(bootstrap, "caravan-reliability-probe") as consumer:
        return {
            topic: {p.partition: p.end for p in await kafka_admin.offsets(consumer, topic)}
            for topic in ALL_TOPICS
        }


async def replay_everything(
    caravan: System, groups: dict[str, list[str]], since: datetime | None = None
) -> int:
    """Stop the services, rewind every group on every topic it reads (to the earliest offset,
    or to the first record at or after ``since``), start them again; records to re-read."""
    await asyncio.to_thread(caravan.procs.stop)  # every process, however many services each
    reread = 0
    try:
        for topic, names in groups.items():
            for group in names:
                result = await replay(
                    caravan.infra.kafka_bootstrap,
                    caravan.infra.database_url,
                    topic,
                    group,
                    earliest=since is None,
                    from_timestamp=since,
                )
                assert result.applied, result.refused
                reread += result.total
    finally:
        caravan.procs.start()
        await asyncio.to_thread(system.wait_ready, caravan.procs)
    return reread


async def partition_leaders(bootstrap: str) -> dict[int, int]:
    """Node id -> how many records the partitions it leads hold (the busiest leader first)."""
    async with kafka_admin.group_client(bootstrap, "caravan-reliability-probe") as consumer:
        meta = await consumer._client.fetch_all_metadata()
        load: Counter[int] = Counter()
        for topic in ALL_TOPICS:
            for p in await kafka_admin.offsets(consumer, topic):
                leader = meta.leader_for_partition(TopicPartition(topic, p.partition))
                if leader is not None and leader >= 0:
                    load[leader] += p.end - p.beginning
        return dict(load.most_common())


async def fully_replicated(bootstrap: str, timeout: float = 300.0) -> None:
    """Wait until every partition, the internal ones too, has all its replicas in sync.

    A node listed in the cluster again may still be loading its logs and catching up; until
    it is back in every ISR, killing another node is losing two, not one."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            topics = await admin.describe_topics()
        except Exception:
            topics = None
        finally:
            await admin.close()
        lagging = (
            None
            if topics is None
            else [
                f"{t['topic']}[{p['partition']}]"
                for t in topics
                for p in t["partitions"]
                if set(p["isr"]) != set(p["replicas"])
            ]
        )
        if lagging == []:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions still under-replicated: {lagging}")
        await asyncio.sleep(1.0)


async def kill_kafka_nodes(
    caravan: System, nodes: list[int], faults: FaultLog, name: str, down: float = 2.0
) -> None:
    """``kill -9`` Kafka nodes (0-based), keep them down ``down`` seconds, start them again."""
    kafka = caravan.infra.local_kafka
    assert kafka is not None, "this fault needs the project's own Kafka"
    began = faults.now()
    for node in nodes:
        await asyncio.to_thread(kafka.kill, node)
    await asyncio.sleep(down)
    for node in nodes:
        await asyncio.to_thread(kafka.restart, node)
    await asyncio.to_thread(kafka.wait_ready, 180.0)
    await fully_replicated(caravan.infra.kafka_bootstrap)
    faults.add(f"{name}:{'+'.join(str(n) for n in nodes)}", began)


async def check_history(
    caravan: System,
    load: Load,
    groups: dict[str, list[str]],
    since: dict[str, dict[int, int]],
    injected: list[Injected],
) -> tuple[int, list[Violation]]:
    """Every record of every topic and the database, checked: (records read, violations).
    First the run's texts are sent (the checker flags one left to send), and what the
    last relays published is read."""
    assert caravan.engine is not None
    waiting, left = await texts_settled(caravan.engine, load.source, timeout=60)
    print(f"texts of the run waiting to be sent: {waiting} at first, {left} at the end")
    await asyncio.sleep(1.0)  # the event log reads what the last relays (sms.sent) published
    records = list(caravan.log.records)
    history = History(
        records=records,
        db=await read_database(caravan.engine),
        injected=injected,
        consumers=groups,
        source=load.source,
        dlq_since=since,
        placed_elsewhere=await caravan.placed_elsewhere(),
    )
    return len(records), check(history)

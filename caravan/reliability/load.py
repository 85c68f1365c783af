"""The load of a reliability run: storefront orders at a steady rate, poison records of every
kind, and redelivered records; and the waits that tell when a run has settled.

Orders mix prepaid and microloan payments over several SKUs, some with little stock (they
sell out) and some buyers close to their credit limit (they get declined). Every request
is published until the broker takes it (a broker fault stalls the load, never drops an
order); one in ``duplicate_every`` is published twice.
"""

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from caravan.reliability.history import Injected, KafkaRecord
from services import SERVICES
from shared import days
from shared.backoff import exponential_step
from shared.events.envelope import CloudEvent, new_event
from shared.events.orders import Buyer, OrderLine, OrderRequested, PaymentRequest
from shared.events.registry import PoisonRecord, parse_record
from shared.messaging import kafka_admin
from shared.seed import SeedFile
from shared.settings import Settings
from shared.topics import EventType, Topic, consumer_group

# (suffix, unit price in fen, units in each of two lots): two plentiful SKUs, two scarce.
SKUS = (("PEPPER", 3500, 5000), ("RAISIN", 2800, 5000), ("HONEY", 9000, 20), ("SAFFRON", 1200, 30))
RICH_BUYERS = 12
TIGHT_BUYERS = 4  # credit for about three orders each
TIGHT_LIMIT_FEN = 30_000


async def publish(
    producer: AIOKafkaProducer, topic: str, value: bytes, key: bytes | None
) -> RecordMetadata:
    """Publish until the broker has the record (a broker outage stalls, never drops it)."""
    failures = 0
    while True:
        try:
            return await producer.send_and_wait(topic, value, key=key)
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            await asyncio.sleep(exponential_step(failures, 0.1, 2.0))


@dataclass
class Load:
    """Orders of one run (its own source, SKUs and buyers), at ``rate`` per second."""

    producer: AIOKafkaProducer
    run: str
    rate: float = 10.0
    duplicate_every: int = 10
    seed_value: int = 9
    sent: dict[str, CloudEvent] = field(default_factory=dict)
    duplicates: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed_value)

    @property
    def source(self) -> str:
        return f"storefront/reliability-{self.run}"

    def sku(self, suffix: str) -> str:
        return f"REL-{self.run}-{suffix}"

    def buyers(self) -> list[dict[str, Any]]:
        # Phones of this run only (+86 135 RRRR NNNN), so that no other test's opt-outs apply.
        prefix = f"+86135{int(self.run, 16) % 10_000:04d}"
        rich = [
            {"id": f"rel-{self.run}-r{i}", "phone": f"{prefix}{i:04d}", "locale": "en"}
            for i in range(RICH_BUYERS)
        ]
        tight = [
            {"id": f"rel-{self.run}-t{i}", "phone": f"{prefix}{9000 + i:04d}", "locale": "ug-CN"}
            for i in range(TIGHT_BUYERS)
        ]
        return [{**b, "credit_limit_fen": 10**9} for b in rich] + [
            {**b, "credit_limit_fen": TIGHT_LIMIT_FEN} for b in tight
        ]

    def seed(self) -> SeedFile:
        today = days.today()
        seller = {
            "id": f"rel-{self.run}",
            "name": "Reliability coop",
            "county": "Shawan",
            "phone": "+8613000008001",
        }
        lots = []
        for suffix, _price, units in SKUS:
            for n, shelf_days in enumerate((30, 60)):
                lots.append(
                    {
                        "lot_id": f"{self.sku(suffix)}-{n}",
                        "sku": self.sku(suffix),
                        "quantity": units,
                        "available_from": str(today - timedelta(days=10)),
                        "best_before": str(today + timedelta(days=shelf_days)),
                    }
                )
        return SeedFile.model_validate(
            {
                "sellers": [seller],
                "products": [
                    {
                        "sku": self.sku(suffix),
                        "seller_id": seller["id"],
                        "unit_price_fen": price,
                        "name": {"en": suffix.title()},
                    }
                    for suffix, price, _units in SKUS
                ],
                "lots": lots,
                "buyers": self.buyers(),
            }
        )

    def next_order(self) -> CloudEvent:
        n = len(self.sent)
        rng = self._rng
        buyer = rng.choice(self.buyers())
        skus = rng.sample([s[0] for s in SKUS], rng.randint(1, 2))
        microloan = buyer["id"].split("-")[-1].startswith("t") or rng.random() < 0.5
        order = OrderRequested(
            order_ref=f"REL-{self.run}-{n:06d}",
            buyer=Buyer(id=buyer["id"], phone=buyer["phone"], locale=buyer["locale"]),
            lines=[OrderLine(sku=self.sku(s), quantity=rng.randint(1, 3)) for s in skus],
            payment=PaymentRequest(method="microloan", term_months=3)
            if microloan
            else PaymentRequest(method="prepaid"),
        )
        event = new_event(order, source=self.source)
        self.sent[order.order_ref] = event
        return event

    async def send(self, event: CloudEvent) -> None:
        await publish(
            self.producer,
            Topic.ORDER_REQUESTS.value,
            event.to_json(),
            str(event.data["order_ref"]).encode(),
        )

    async def run_until(self, stop: asyncio.Event, limit: int | None = None) -> None:
        """Publish orders at ``rate`` until ``stop`` is set (or ``limit`` orders are out)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not stop.is_set() and (limit is None or len(self.sent) < limit):
            event = self.next_order()
            await self.send(event)
            if len(self.sent) % self.duplicate_every == 0:
                await self.send(event)
                self.duplicates += 1
            due += 1 / self.rate
            await asyncio.sleep(max(0.0, due - loop.time()))


def poison_records(source: str, run: str) -> dict[str, bytes]:
    """One record of each kind of poison, by name (values a consumer must refuse)."""

    def envelope(type_: str, data: Any) -> bytes:
        return orjson.dumps(
            {
                "specversion": "1.0",
                "id": f"poison-{run}-{type_}-{len(str(data))}",
                "source": source,
                "type": type_,
                "time": datetime.now(UTC).isoformat(),
                "data": data,
            }
        )

    valid = {
        "buyer": {"id": "x", "phone": "+8613900000001"},
        "lines": [{"sku": "X", "quantity": 1}],
        "payment": {"method": "prepaid"},
    }
    nested: Any = "bottom"
    for _ in range(200):
        nested = {"n": nested}
    requested = EventType.ORDER_REQUESTED.value
    return {
        "not_json": b"this is not JSON {",
        "invalid_utf8": b'{"specversion": "1.0", "id": "\xff\xfe\xfd", "type": "x"}',
        "not_an_object": b"[1, 2, 3]",
        "not_a_cloudevent": orjson.dumps({"hello": "world"}),
        "wrong_type": envelope("order.shipped", {**valid, "order_ref": f"P-{run}-wrong"}),
        "schema_violation": envelope(
            requested, {**valid, "order_ref": f"P-{run}-schema", "lines": [{"sku": "X"}]}
        ),
        # 600 KB: under the broker's 1 MB limit, far over the address's 256 characters.
        "huge": envelope(
            requested,
            {
                **valid,
                "order_ref": f"P-{run}-huge",
                "delivery": {"county": "Shawan", "address": "x" * 600_000},
            },
        ),
        "deeply_nested": envelope(requested, {**valid, "order_ref": f"P-{run}-deep", "x": nested}),
    }


async def inject_poison(
    producer: AIOKafkaProducer, source: str, run: str, topics: Sequence[Topic]
) -> list[Injected]:
    """Publish every kind of poison onto each of ``topics``; where each one landed."""
    injected = []
    for topic in topics:
        for name, value in poison_records(source, run).items():
            meta = await publish(producer, topic.value, value, f"poison-{name}".encode())
            injected.append(Injected(meta.topic, meta.partition, meta.offset))
    return injected


async def redeliver(
    producer: AIOKafkaProducer,
    records: Sequence[KafkaRecord],
    count: int,
    rng: random.Random,
    topics: Sequence[Topic] = (Topic.ORDER_EVENTS, Topic.INVENTORY_EVENTS, Topic.PAYMENT_EVENTS),
) -> int:
    """Publish ``count`` already delivered events again, in shuffled order: duplicated and
    reordered deliveries (each keeps its key, so it lands on its partition, late)."""
    names = {t.value for t in topics}
    pool = [r for r in records if r.topic in names and _parses(r)]
    chosen = rng.sample(pool, min(count, len(pool)))
    for record in chosen:
        key = getattr(record, "key", None)
        assert record.value is not None
        await publish(producer, record.topic, record.value, key)
    return len(chosen)


def _parses(record: KafkaRecord) -> bool:
    try:
        parse_record(Topic(record.topic), record.value)
    except PoisonRecord:
        return False
    return True


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """Topic -> the consumer groups that read it, from every service's subscriptions (the
    same table the AsyncAPI document and the Kafka ACLs are made from)."""
    from services.orders.asyncapi import consumers

    groups: dict[str, list[str]] = {}
    for service, subscriptions in consumers(settings).items():
        for sub in subscriptions:
            groups.setdefault(sub.topic.value, []).append(consumer_group(service))
    return groups


async def backlog(bootstrap: str, engine: AsyncEngine, groups: dict[str, list[str]]) -> int:
    """Records not yet consumed by every group, plus outbox rows not yet published (but
    those the relay set aside, Kafka refusing them for good: they are never published)."""
    total = 0
    by_group: dict[str, list[str]] = {}
    for topic, names in groups.items():
        for group in names:
            by_group.setdefault(group, []).append(topic)
    for group, topics in by_group.items():
        async with kafka_admin.group_client(bootstrap, group) as consumer:
            for topic in topics:
                total += sum(p.lag for p in await kafka_admin.offsets(consumer, topic))
    async with engine.connect() as conn:
        for schema in SERVICES:  # each service has its schema, with its outbox
            unsent = await conn.scalar(
                text(
                    f"select count(*) from {schema}.outbox"
                    " where sent_at is null and refused_at is null"
                )
            )
            total += int(unsent or 0)
    return total


async def settle(
    bootstrap: str,
    engine: AsyncEngine,
    groups: dict[str, list[str]],
    timeout: float,
    quiet: float = 2.0,
) -> bool:
    """Wait until nothing is left to consume or publish, twice ``quiet`` seconds apart."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    calm = 0
    while loop.time() < deadline:
        try:
            left = await backlog(bootstrap, engine, groups)
        except Exception:
            left = -1  # the broker or the database is not answering yet
        calm = calm + 1 if left == 0 else 0
        if calm >= 2:
            return True
        await asyncio.sleep(quiet)
    return False


_TEXTS_TO_SEND = text(
    "select count(*) from notifications.sms s join orders.orders o on o.order_id = s.order_id"
    " where o.source = :source and s.status in ('pending', 'sending')"
)


async def texts_settled(
    engine: AsyncEngine, source: str, timeout: float, quiet: float = 1.0
) -> tuple[int, int]:
    """Wait until no text of ``source``'s orders is waiting to be sent or being sent (one
    claimed by a dispatcher stopped by a kill or a replay is sent again when its lease lapses,
    30 s later): (how many were when the wait began, how many still are at the end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first: int | None = None
    while True:
        try:
            async with engine.connect() as conn:
                left = int(await conn.scalar(_TEXTS_TO_SEND, {"source": source}) or 0)
        except Exception:
            left = -1  # the database is not answering yet
        first = left if first is None else first
        if left == 0 or loop.time() >= deadline:
            return first, left
        await asyncio.sleep(quiet)

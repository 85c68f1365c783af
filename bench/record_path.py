"""The Python that Caravan's own code runs for each consumed record, with no broker or database.

    .venv/bin/python bench/record_path.py [--batch 10] [--records 20000] [--rounds 5] [--profile]

A service's consumer step, in-process: a batch of ``--batch`` synthetic records of
``orders.events.v1`` (as the relay writes them: a CloudEvent, its ``content-type`` and
``traceparent`` headers) through :meth:`shared.messaging.consumer.Consumer.dispatch_batch` (the
parse, the inbox claim's keys, the prefetch, each handler in its span and log context, the
metrics, the unit of work's outbox rows at commit), then the outbox relay's batch of what it
emitted (:meth:`shared.messaging.relay.OutboxRelay.publish_batch`); and the same records
alone (a batch of one each, as at low rates: :meth:`Consumer.dispatch`, a transaction each).
Of every three records two are handled (``order.placed``, whose handler emits a
``stock.reserved`` built from it, and ``order.confirmed``, which emits ``stock.sold``) and one
is of a type skipped (``order.rejected``), as a service reads about a third it does not handle.

The database and the producer are stand-ins that cost next to nothing (every key claimed new,
Kafka answering at once): what is timed is the code of ``shared/`` (and pydantic, the
telemetry, prometheus_client it calls), not SQLAlchemy's, asyncpg's, aiokafka's or
FastStream's. Spans are not recorded (no exporter, as in the headline), log lines at INFO go
nowhere, and the garbage collector is set as a service sets it (``shared.main``), on uvloop.

Prints the CPU (this thread's) per record of each path, the best of ``--rounds`` rounds of
``--records`` records; ``--profile`` runs one round more under cProfile and prints the
functions that took the most time of their own. The machine is shared: compare two versions
of the code by alternating them (a b a b), as bench/HISTORY.md does.
"""

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, redirect_stderr
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import uvloop
from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import MetaData

from shared.db import Database
from shared.events.envelope import CONTENT_TYPE, new_event
from shared.events.inventory import LotTake, ReservedLine, StockReserved, StockSold
from shared.events.orders import (
    Buyer,
    ConfirmedPayment,
    FieldError,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentRequest,
)
from shared.events.registry import Parsed
from shared.logs import configure_logging
from shared.messaging.consumer import Consumer, Subscription
from shared.messaging.relay import OutboxRelay
from shared.messaging.tables import add_messaging_tables
from shared.messaging.uow import Tx, UnitOfWork
from shared.telemetry import SERVICE, configure_tracing
from shared.topics import EventType, Topic

NAME = "bench"
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class Raw:
    """asyncpg's connection: every key claimed is new, every write taken; the outbox rows
    written are kept (:attr:`written`) for the relay's batch."""

    def __init__(self) -> None:
        self.written: list[list[Any]] = []
        self.unsent: list[dict[str, Any]] = []

    def is_in_transaction(self) -> bool:
        return True

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if sql.startswith("INSERT"):  # the inbox claim: its keys back, each new
            return [(key,) for key in args[0]]
        return self.unsent  # the relay's read of unsent rows

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return True  # the relay's advisory lock

    async def execute(self, sql: str, *args: Any) -> str:
        self.written.append(list(args))
        return ""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


class Pooled:
    def __init__(self, raw: Raw) -> None:
        self.driver_connection = raw
        self.dbapi_connection = self


class Conn:
    """SQLAlchemy's connection, in a transaction begun (``engine.begin()``)."""

    def __init__(self, raw: Raw) -> None:
        self.pooled = Pooled(raw)

    async def get_raw_connection(self) -> Pooled:
        return self.pooled

    def in_transaction(self) -> bool:
        return True


class Engine:
    def __init__(self) -> None:
        self.raw = Raw()
        self.conn = Conn(self.raw)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Conn]:
        yield self.conn

    connect = begin


class Db:
    schema = NAME

    def __init__(self) -> None:
        self.engine = Engine()


class Kafka:
    """aiokafka's consumer, for the offsets handled (:class:`HandledOffsets`): committing
    takes nothing."""

    _coordinator = None

    def assignment(self) -> set[Any]:
        return set()

    def seek(self, *_: Any) -> None: ...


class Producer:
    """Kafka taking every record and answering at once."""

    async def send(self, topic: str, **_: Any) -> asyncio.Future[None]:
        answered = asyncio.get_running_loop().create_future()
        answered.set_result(None)
        return answered


async def on_placed(tx: Tx, parsed: Parsed) -> None:
    placed = cast(OrderPlaced, parsed.data)
    assert placed.payment is not None
    lines = [
        ReservedLine(
            sku=line.sku,
            quantity=line.quantity,
            unit_price_fen=1200,
            seller_id="s-1",
            lots=[LotTake(lot_id=f"lot-{line.sku}", quantity=line.quantity)],
        )
        for line in placed.lines
    ]
    total = sum(line.quantity * line.unit_price_fen for line in lines)
    reserved = StockReserved(
        order_id=placed.order_id,
        buyer_id=placed.buyer_id,
        payment=placed.payment,
        lines=lines,
        total_fen=total,
        source=placed.source,
        order_ref=placed.order_ref,
        held_until=placed.deadline_at,
    )
    await tx.emit(reserved)


async def on_confirmed(tx: Tx, parsed: Parsed) -> None:
    await tx.emit(StockSold(order_id=cast(OrderConfirmed, parsed.data).order_id))


async def prefetch(tx: Tx, batch: Sequence[Parsed]) -> None:
    tx.remember("order", [p.data.order_id for p in batch], {})  # type: ignore[attr-defined]


def records(n: int) -> list[ConsumerRecord]:
    """``n`` records of orders.events.v1, each of its own order: placed, confirmed, rejected."""
    now = datetime.now(UTC)
    made = []
    for i in range(n):
        order_id = f"0193a1b2-0000-7000-8000-{i:012d}"
        ref = f"SWN-{i:06d}"
        data: Any
        if i % 3 == 0:
            data = OrderPlaced(
                order_id=order_id,
                order_ref=ref,
                source="storefront/shawan-center",
                buyer_id="b-0042",
                lines=[
                    OrderLine(sku="PEPPER-1KG", quantity=2),
                    OrderLine(sku="JUJUBE", quantity=1),
                ],
                buyer=Buyer(id="b-0042", phone="+8613912345678"),
                payment=PaymentRequest(method="microloan", term_months=6),
                placed_at=now,
                deadline_at=now + timedelta(minutes=15),
            )
        elif i % 3 == 1:
            data = OrderConfirmed(
                order_id=order_id,
                order_ref=ref,
                total_fen=3600,
                payment=ConfirmedPayment(method="microloan", loan_id=order_id),
            )
        else:
            data = OrderRejected(
                order_ref=ref,
                source="storefront/shawan-center",
                errors=[FieldError(field="lines", message="must not be empty")],
            )
        event = new_event(data, source="caravan/orders", correlation_id=order_id)
        value = event.to_json()
        headers = [("content-type", CONTENT_TYPE.encode()), ("traceparent", TRACEPARENT)]
        key = order_id.encode()
        made.append(
            ConsumerRecord(Topic.ORDER_EVENTS.value, 0, i, 0, 0, key, value, None, 0, 0, headers)
        )
    return made


def service() -> tuple[Consumer, OutboxRelay, Raw]:
    """A service reading orders.events.v1 in batches, on the stand-ins; and their database."""
    outbox, inbox = add_messaging_tables(MetaData(schema=NAME))
    db = Db()
    uow = UnitOfWork(cast(Database, db), source=f"caravan/{NAME}", outbox=outbox, inbox=inbox)
    producer = cast(Callable[[], AIOKafkaProducer], Producer)
    relay = OutboxRelay(cast(Database, db), outbox, producer, service=NAME)
    uow.on_commit(relay.wake)
    consumer = Consumer(NAME, f"caravan-{NAME}", uow, 3, 100, 500, 1, 500)
    handlers = {EventType.ORDER_PLACED: on_placed, EventType.ORDER_CONFIRMED: on_confirmed}
    consumer.register(Subscription(Topic.ORDER_EVENTS, handlers, prefetch=prefetch))
    return consumer, relay, db.engine.raw


def unsent(written: list[list[Any]]) -> list[dict[str, Any]]:
    """The outbox rows written, as the relay's read returns them (headers decoded)."""
    rows: list[dict[str, Any]] = []
    for topics, keys, values, headers in written:
        for topic, key, value, header in zip(topics, keys, values, headers, strict=True):
            row = {"topic": topic, "key": key, "value": value, "headers": orjson.loads(header)}
            rows.append({"id": len(rows) + 1, **row})
    return rows


async def one_round(batch: int, made: list[ConsumerRecord]) -> dict[str, float]:
    """CPU seconds per record of each path over ``made``."""
    consumer, relay, raw = service()
    kafka = Kafka()
    spent = {"batched": 0.0, "relay": 0.0, "alone": 0.0}
    for start in range(0, len(made), batch):
        raw.written = []
        taken = made[start : start + batch]
        began = time.thread_time()
        async with consumer.offsets.handling(kafka, taken):  # as Consumer.attach's on_batch
            await consumer.dispatch_batch(taken)
        spent["batched"] += time.thread_time() - began
        raw.unsent = unsent(raw.written)
        began = time.thread_time()
        published = await relay.publish_batch()
        spent["relay"] += time.thread_time() - began
        assert published == len(raw.unsent), (published, len(raw.unsent))
    began = time.thread_time()
    for record in made:
        async with consumer.offsets.handling(kafka, (record,)):
            await consumer.dispatch(record)
    spent["alone"] = time.thread_time() - began
    return {path: seconds / len(made) for path, seconds in spent.items()}


async def run(args: argparse.Namespace) -> None:
    SERVICE.set(NAME)
    made = records(args.records)
    await one_round(args.batch, made[: args.batch * 4])  # warm: caches, first compilations
    best: dict[str, float] = {}
    for i in range(args.rounds):
        took = await one_round(args.batch, made)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in took.items()))
        best = {k: min(v, best.get(k, v)) for k, v in took.items()}
    print(
        f"best of {args.rounds} rounds of {args.records} records, CPU per record: "
        f"in batches of {args.batch} {best['batched'] * 1e6:.2f} us"
        f" (+ relay {best['relay'] * 1e6:.2f} us), alone {best['alone'] * 1e6:.2f} us"
    )
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        await one_round(args.batch, made)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=10, help="records a batch")
    parser.add_argument("--records", type=int, default=20_000, help="records a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--profile", type=int, nargs="?", const=40, default=0, help="print the top N functions"
    )
    args = parser.parse_args()
    nowhere = open(os.devnull, "w")  # noqa: SIM115  # the log handler's, while the bench runs
    with redirect_stderr(nowhere):
        configure_logging(NAME)
    configure_tracing(NAME)
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    uvloop.run(run(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

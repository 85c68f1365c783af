"""Reservations per second of the inventory service: one and two instances in one consumer
group, on one hot SKU and on SKUs spread out, against real Kafka and PostgreSQL.

Starts its own Kafka and PostgreSQL (on ports of its own, under ``.cache/bench-<port>``) and
only the inventory service: it publishes ``order.placed`` events straight onto
``orders.events.v1`` (as the orders service would) and times how long the inventory takes to
record a reservation for every one of them (each one a transaction: lot row locks, the
reservation, its lines and a ``stock.reserved`` outbox row). Writes
``bench/results/inventory_reservations.json`` (and a PNG plot when matplotlib is installed).

    .venv/bin/python bench/inventory_reservations.py [--orders 1000] [--rounds 2]
"""

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caravan import system
from caravan.checkout import CACHE
from caravan.seeding import bench_seed, load_again
from shared.events.envelope import new_event
from shared.events.orders import OrderLine, OrderPlaced
from shared.seed import SeedFile
from shared.settings import asyncpg_url
from shared.topics import Topic

RESULTS = Path(__file__).resolve().parent / "results"
SPREAD = 100  # SKUs in the spread-out scenario


def seed() -> SeedFile:
    skus = ["BENCH-HOT", *(f"BENCH-S-{i:03d}" for i in range(SPREAD))]
    # Three lots per SKU, so that reservations lock (and may span) several rows.
    return bench_seed(skus, lots=[(n, 30 + n) for n in range(3)], units=10_000_000)


def placed(order_id: str, sku: str) -> bytes:
    data = OrderPlaced(
        order_id=order_id,
        order_ref=order_id,
        source="bench",
        buyer_id="bench-buyer",
        lines=[OrderLine(sku=sku, quantity=1)],
        placed_at=datetime.now(UTC),
    )
    return new_event(data, source="caravan/bench", correlation_id=order_id).to_json()


async def members(bootstrap: str) -> tuple[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups(["caravan-inventory"])
        _error, _id, state, _ptype, _protocol, group_members, *_ = response.groups[0]
        return str(state), len(group_members)
    finally:
        await admin.close()


async def wait_group(bootstrap: str, instances: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await members(bootstrap) == ("Stable", instances):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the inventory group never had {instances} stable members")


async def run_batch(
    producer: AIOKafkaProducer, engine: AsyncEngine, skus: list[str], count: int
) -> float:
    """Publish ``count`` orders round-robin over ``skus``; seconds until all are reserved."""
    run = uuid.uuid4().hex[:8]
    ids = [f"bench-{run}-{n:08d}" for n in range(count)]
    values = [(i, placed(i, skus[n % len(skus)])) for n, i in enumerate(ids)]
    started = time.perf_counter()
    await asyncio.gather(
        *(producer.send(Topic.ORDER_EVENTS.value, v, key=i.encode()) for i, v in values)
    )
    await producer.flush()
    query = text("select count(*) from inventory.reservations where order_id like :p")
    while True:
        async with engine.connect() as conn:
            done = int((await conn.execute(query, {"p": f"bench-{run}-%"})).scalar_one())
        if done >= count:
            return time.perf_counter() - started
        await asyncio.sleep(0.02)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    infra = system.start_infrastructure(
        base_dir=args.base,
        kafka_port=args.kafka_port,
        postgres_port=args.postgres_port,
    )
    procs = system.ServiceProcesses(
        system.service_env(infra, args.http_port, CARAVAN_ENVIRONMENT="test"),
        args.base / "logs",
    )
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, linger_ms=5)
    engine = create_async_engine(asyncpg_url(infra.database_url))
    results: list[dict[str, Any]] = []
    partitions = 0
    try:
        await system.prepare(infra.kafka_bootstrap, infra.database_url)
        await load_again(infra.database_url, seed())
        await producer.start()
        # What the broker has (a kept cluster keeps its topics' count), not a setting.
        partitions = len(await producer.partitions_for(Topic.ORDER_EVENTS.value))
        scenarios = {"hot": ["BENCH-HOT"], "spread": [f"BENCH-S-{i:03d}" for i in range(SPREAD)]}
        for instances in (1, 2):
            procs.start(("inventory",), instance=instances)
            await asyncio.to_thread(system.wait_ready, procs)
            await wait_group(infra.kafka_bootstrap, instances)
            await run_batch(producer, engine, scenarios["spread"], 60)  # warm up
            for name, skus in scenarios.items():
                times = [
                    await run_batch(producer, engine, skus, args.orders) for _ in range(args.rounds)
                ]
                rates = [args.orders / t for t in times]
                results.append(
                    {
                        "instances": instances,
                        "skus": name,
                        "orders": args.orders,
                        "seconds": [round(t, 3) for t in times],
                        "per_second_median": round(statistics.median(rates), 1),
                        "per_second": [round(r, 1) for r in rates],
                    }
                )
                print(
                    f"{instances} instance(s), {name:6s}: "
                    f"{statistics.median(rates):7.1f} reservations/s  "
                    f"(rounds: {', '.join(f'{r:.0f}' for r in rates)})",
                    flush=True,
                )
    finally:
        await producer.stop()
        await engine.dispose()
        procs.stop()
        infra.stop()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "kafka": infra.kafka_path,
        "postgres": infra.postgres_path,
        "partitions": partitions,
        "results": results,
    }


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        importlib.import_module("matplotlib").use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("hot", "spread"):
        rows = [r for r in report["results"] if r["skus"] == name]
        ax.plot(
            [r["instances"] for r in rows],
            [r["per_second_median"] for r in rows],
            marker="o",
            label=f"{name} SKU{'s' if name == 'spread' else ''}",
        )
    ax.set(xlabel="inventory instances", ylabel="reservations / s", xticks=[1, 2])
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per scenario")
    parser.add_argument("--kafka-port", type=int, default=21092)
    parser.add_argument("--postgres-port", type=int, default=15434)
    parser.add_argument("--http-port", type=int, default=18980)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections at start
    system.stop_on_signals()  # a SIGTERM still stops what the run started
    args.base = CACHE / f"bench-{args.kafka_port}"
    with system.run_alone(args.base):
        report = asyncio.run(bench(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "inventory_reservations.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    if plot(report, out.with_suffix(".png")):
        print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Soak: orders under load for N minutes on a three-node Kafka cluster (replication factor 3,
``min.insync.replicas=2``) while every fault of ``tests/reliability`` is injected, and more:
the leader of the busiest partitions killed with SIGKILL, two brokers down at once (writes
stall, nothing is lost, they resume), one node killed and restarted. Then a replay of every
consumer group from the earliest offset and the history checker over every record and the
database. Not part of CI.

Starts its own Kafka cluster and PostgreSQL (under ``.cache/soak-<port>``) and the five
services; shows progress while it runs; writes ``bench/results/soak.json`` and, when
matplotlib is installed (``uv sync --extra bench``), ``bench/results/soak.png``: orders
ended over time with the fault windows marked. With ``--processes N`` the services run in
fewer processes (``caravan up --processes``), each kill of a service kills its whole
process, and the results go to ``soak-<N>-processes.json`` and ``.png``.

    .venv/bin/python bench/soak.py [--minutes 5] [--rate 8] [--processes 5]
"""

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import add_processes, mark_windows, processes_suffix
from caravan import system
from caravan.checkout import CACHE
from caravan.reliability.history import CHECKS
from caravan.reliability.load import Load, consumer_groups, inject_poison, redeliver, settle
from caravan.tokens_cli import issue_token
from shared.auth.scopes import SCOPES
from shared.settings import Settings
from shared.topics import Topic
from tests.harness import EventLog, System
from tests.reliability.faults import (
    FaultLog,
    Outcomes,
    all_ended,
    check_history,
    end_offsets,
    kill_and_restart,
    kill_kafka_nodes,
    partition_leaders,
    replay_everything,
    restart_postgres_immediate,
    scale_inventory,
)

RESULTS = Path(__file__).resolve().parent / "results"
NODES = 3


def schedule(caravan: System, load: Load, faults: FaultLog, rng: random.Random) -> list[Any]:
    """The faults, in order; each a coroutine factory (spread over the run)."""
    assert caravan.producer is not None
    producer = caravan.producer

    async def busiest_leader() -> None:
        leaders = await partition_leaders(caravan.infra.kafka_bootstrap)
        node_id = next(iter(leaders))
        await kill_kafka_nodes(caravan, [node_id - 1], faults, "kill -9 busiest leader", 10)

    async def two_brokers() -> None:
        down = rng.sample(range(NODES), 2)
        await kill_kafka_nodes(caravan, down, faults, "two brokers down", 15)

    async def one_node() -> None:
        await kill_kafka_nodes(caravan, [rng.randrange(NODES)], faults, "kill -9 node", 3)

    def hosting(*names: str) -> tuple[str, ...]:
        """``names`` and the other services their processes run (``--processes``): a kill
        takes a whole process."""
        return tuple(caravan.procs.services(caravan.procs.hosts(names)))

    async def services_a() -> None:
        faults.republished = await kill_and_restart(
            caravan, hosting("orders", "inventory"), faults, relay_dies_in="orders"
        )

    async def redelivered() -> None:
        began = faults.now()
        await redeliver(producer, caravan.log.records, 100, rng)
        faults.add("redelivered out of order", began)

    async def poison() -> None:
        began = faults.now()
        faults.injected = await inject_poison(
            producer, load.source, load.run, (Topic.ORDER_REQUESTS, Topic.ORDER_EVENTS)
        )
        faults.add("poison records", began)

    def services_b() -> Awaitable[int]:
        return kill_and_restart(caravan, hosting("payments", "notifications"), faults)

    return [
        poison,
        busiest_leader,
        services_a,
        lambda: restart_postgres_immediate(caravan, faults),
        two_brokers,
        lambda: scale_inventory(caravan, faults),
        services_b,
        redelivered,
        one_node,
    ]


async def soak(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    base = args.base
    console.print(f"starting a {NODES}-node Kafka cluster and PostgreSQL under {base} ...")
    infra = await asyncio.to_thread(
        system.start_infrastructure,
        base_dir=base,
        kafka_port=args.kafka_port,
        postgres_port=args.postgres_port,
        kafka_nodes=NODES,
    )
    procs = system.ServiceProcesses(
        system.service_env(infra, args.http_port),
        base / f"logs-{uuid.uuid4().hex[:6]}",
        args.processes,
    )
    log = EventLog(infra.kafka_bootstrap)
    try:
        await system.prepare(infra.kafka_bootstrap, infra.database_url, rf=NODES)
        await log.start()
        procs.start()
        await asyncio.to_thread(system.wait_ready, procs)
        token = await issue_token(infra.database_url, f"soak-{uuid.uuid4().hex[:6]}", list(SCOPES))
        caravan = System(infra, procs, log, f"http://127.0.0.1:{args.http_port}", token)
        await caravan.start()
        try:
            return await drive(caravan, args, console)
        finally:
            await caravan.stop()
    finally:
        procs.stop()
        await log.stop()
        infra.stop()


async def drive(caravan: System, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    assert caravan.producer is not None and caravan.engine is not None
    run = uuid.uuid4().hex[:6]
    rng = random.Random(run)
    load = Load(caravan.producer, run, rate=args.rate)
    await caravan.seed(load.seed())
    groups = consumer_groups(Settings(DATABASE_URL=caravan.infra.database_url))
    since = await end_offsets(caravan.infra.kafka_bootstrap)
    faults = FaultLog()
    outcomes = Outcomes()
    timeline: list[tuple[float, int, int]] = []  # seconds, requested, ended
    duration = args.minutes * 60
    steps = schedule(caravan, load, faults, rng)
    current = {"fault": "warming up"}

    def table() -> Table:
        t = Table(title=f"Caravan soak {run}: {NODES} Kafka nodes, {args.rate:g} orders/s")
        for col in ("elapsed", "requested", "ended", "open", "faults done", "now"):
            t.add_column(col)
        requested = len(load.sent)
        ended = len(outcomes.tally()) and sum(outcomes.tally().values())
        t.add_row(
            f"{faults.now():.0f}s / {duration}s",
            str(requested),
            str(ended),
            str(requested - ended),
            str(len(faults.windows)),
            current["fault"],
        )
        return t

    stop = asyncio.Event()
    driver = asyncio.create_task(load.run_until(stop))

    async def sample() -> None:
        while True:
            outcomes.update(caravan, load.source)
            timeline.append(
                (round(faults.now(), 1), len(load.sent), sum(outcomes.tally().values()))
            )
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    with Live(table(), console=console, refresh_per_second=2) as live:

        async def refresh() -> None:
            while True:
                live.update(table())
                await asyncio.sleep(0.5)

        refresher = asyncio.create_task(refresh())
        try:
            gap = duration / (len(steps) + 1)
            for i, step in enumerate(steps, start=1):
                await asyncio.sleep(max(0.0, i * gap - faults.now()))
                current["fault"] = getattr(step, "__name__", "fault")
                await _run(step)
                current["fault"] = "-"
            await asyncio.sleep(max(0.0, duration - faults.now()))
            stop.set()
            await driver
            load_seconds = faults.now()
            current["fault"] = "draining"
            still_open = await all_ended(caravan, load, outcomes, timeout=240)
            await settle(caravan.infra.kafka_bootstrap, caravan.engine, groups, timeout=240)
            drained = faults.now()
            current["fault"] = "replaying every group from the earliest offset"
            reread = await replay_everything(caravan, groups)
            current["fault"] = "settling"
            settled = await settle(
                caravan.infra.kafka_bootstrap, caravan.engine, groups, timeout=240
            )
            replayed = faults.now()
        finally:
            stop.set()
            refresher.cancel()
            sampler.cancel()
    injected = faults.injected
    records, violations = await check_history(caravan, load, groups, since, injected)
    outcomes.update(caravan, load.source)
    return {
        "run": run,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "kafka": {"nodes": NODES, "replication_factor": NODES, "min_insync_replicas": 2},
        "service_processes": caravan.procs.processes,
        "minutes": args.minutes,
        "rate_per_second": args.rate,
        "orders_requested": len(load.sent),
        "duplicate_requests": load.duplicates,
        "outcomes": outcomes.tally(),
        "orders_never_ended": still_open,
        "phases_seconds": {
            "load": round(load_seconds, 1),
            "drain": round(drained - load_seconds, 1),
            "replay_and_settle": round(replayed - drained, 1),
        },
        "settled_after_replay": settled,
        "records_replayed": reread,
        "faults": faults.windows,
        "fault_counts": faults.counts(),
        "poison_records": len(injected),
        "events_republished_by_the_killed_relay": faults.republished,
        "records_checked": records,
        "invariants_checked": list(CHECKS),
        "violations": [str(v) for v in violations],
        "timeline": timeline,
    }


async def _run(step: Callable[[], Awaitable[Any]]) -> None:
    await step()


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        importlib.import_module("matplotlib").use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5))
    t = [row[0] for row in report["timeline"]]
    ax.plot(t, [row[1] for row in report["timeline"]], label="requested", color="grey")
    ax.plot(t, [row[2] for row in report["timeline"]], label="ended (confirmed or cancelled)")
    mark_windows(ax, [(name.split(":")[0], start, end) for name, start, end in report["faults"]])
    processes = report["service_processes"]
    title = "Caravan soak: orders under faults" + (
        f", the services in {processes} processes" if processes_suffix(processes) else ""
    )
    ax.set(xlabel="seconds", ylabel="orders", title=title)
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=8.0, help="orders per second")
    parser.add_argument("--kafka-port", type=int, default=25092, help="first of three ports")
    parser.add_argument("--postgres-port", type=int, default=15436)
    parser.add_argument("--http-port", type=int, default=19580)
    add_processes(parser, "soak")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    console = Console()
    started = time.monotonic()
    system.stop_on_signals()  # a SIGTERM still stops what the run started
    args.base = CACHE / f"soak-{args.kafka_port}"
    with system.run_alone(args.base):
        report = asyncio.run(soak(args, console))
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak{processes_suffix(args.processes)}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    plotted = plot(report, out.with_suffix(".png"))
    console.print(
        f"{report['orders_requested']} orders, {report['outcomes']}, "
        f"{len(report['faults'])} faults, {len(report['invariants_checked'])} invariants, "
        f"violations: {len(report['violations'])}"
        + (f" (plot: bench/results/{out.with_suffix('.png').name})" if plotted else "")
    )
    for line in report["violations"][:20]:
        console.print(f"  {line}", style="red", markup=False)
    sys.exit(1 if report["violations"] or report["orders_never_ended"] else 0)


if __name__ == "__main__":
    main()

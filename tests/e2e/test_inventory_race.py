"""The race: two inventory instances in one consumer group, one SKU with 100 units in three
lots, 300 concurrent single-unit orders. Exactly 100 are confirmed, 200 cancelled
``out_of_stock``; nothing is left available and every lot's counters add up."""

import asyncio
import json
import os
import signal
import uuid

from shared.events.envelope import CloudEvent
from shared.events.registry import PoisonRecord, parse_record
from shared.messaging import kafka_admin
from shared.settings import IDLE_MARGIN_SECONDS, RELAY_KAFKA_WAIT_SECONDS
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed, prepaid_units
from tests.e2e.test_inventory_holds import BUYER as HOLD_BUYER
from tests.e2e.test_inventory_holds import place
from tests.harness import System, freeze

ORDERS = 300
LOTS = {"A": 30, "B": 33, "C": 37}
BUYER = {"id": "inv-race-buyer", "phone": "+8613900007021", "locale": "en"}


async def _both_instances_in_the_group(caravan: System, timeout: float = 60.0) -> None:
    await caravan.until(
        lambda: kafka_admin.describe_group(caravan.infra.kafka_bootstrap, "caravan-inventory"),
        "the inventory group to have two stable members",
        timeout,
        every=0.5,
        ready=lambda group: group.state == "Stable" and len(group.members) == 2,
    )


async def test_two_instances_are_told_apart_by_their_kafka_clients_and_log_lines(
    caravan: System,
) -> None:
    """The harness sets CARAVAN_INSTANCE_ID on each instance it starts, which nothing read:
    both inventories were the Kafka client ``caravan-inventory-consumer``, and their log
    lines said the same service and nothing else."""
    caravan.procs.start(("inventory",), instance=2)
    try:
        await _both_instances_in_the_group(caravan)
        group = await kafka_admin.describe_group(caravan.infra.kafka_bootstrap, "caravan-inventory")
    finally:
        await asyncio.to_thread(caravan.procs.stop, ["inventory-2"])
    clients = sorted(group.clients)
    assert clients == ["caravan-inventory-1-consumer", "caravan-inventory-2-consumer"], clients
    started = caravan.procs.logged["inventory-2"]  # the log's size when it started
    logged = (caravan.procs.log_dir / "inventory-2.log").read_bytes()[started:].decode()
    entries = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    assert entries and {e.get("instance") for e in entries} == {"2"}, entries[:3]


class Outcomes:
    """Reads the recorded ``orders.events.v1`` incrementally (each record parsed once)."""

    def __init__(self, caravan: System, refs: set[str]) -> None:
        self.caravan = caravan
        self.refs = refs
        self.seen = 0
        self.order_ids: set[str] = set()
        self.terminal: dict[str, list[CloudEvent]] = {}

    def poll(self) -> int:
        records = self.caravan.log.records
        new, self.seen = records[self.seen :], len(records)
        for record in new:
            if record.topic != Topic.ORDER_EVENTS.value:
                continue
            try:
                env = parse_record(Topic.ORDER_EVENTS, record.value).envelope
            except PoisonRecord:  # another test's poison: the session's broker is shared
                continue
            if env.type == "order.placed" and env.data["order_ref"] in self.refs:
                self.order_ids.add(env.data["order_id"])
            elif (
                env.type in ("order.confirmed", "order.cancelled")
                and env.data.get("order_ref") in self.refs
            ):
                self.terminal.setdefault(env.data["order_id"], []).append(env)
        return len(self.terminal)


async def test_two_instances_never_oversell_a_hot_sku(caravan: System) -> None:
    sku = f"INV-RACE-{uuid.uuid4().hex[:8]}"
    await caravan.seed(
        one_sku_seed(
            sku,
            100,
            {suffix: (quantity, -10, 10 + i) for i, (suffix, quantity) in enumerate(LOTS.items())},
            [{**BUYER, "credit_limit_fen": 10**12}],
        )
    )
    caravan.procs.start(("inventory",), instance=2)
    try:
        await _both_instances_in_the_group(caravan)
        refs = [f"INV-RACE-{sku[-8:]}-{n:03d}" for n in range(ORDERS)]
        requests = prepaid_units(sku, BUYER, refs)
        await asyncio.gather(*(caravan.request(r) for r in requests))
        outcomes = Outcomes(caravan, {r.order_ref for r in requests})
        await caravan.until(
            outcomes.poll, f"all {ORDERS} orders to end", 180, ready=lambda n: n >= ORDERS
        )
        sold = caravan.wait_for(
            lambda: [
                e
                for e in caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.sold")
                if e.data["order_id"] in outcomes.order_ids
            ],
            count=sum(LOTS.values()),
            timeout=60,
        )
        await sold
        caravan.procs.check_alive()
    finally:
        await asyncio.to_thread(caravan.procs.stop, ["inventory-2"])

    assert len(outcomes.order_ids) == ORDERS
    assert all(len(events) == 1 for events in outcomes.terminal.values())
    kinds = [events[0] for events in outcomes.terminal.values()]
    confirmed = [e for e in kinds if e.type == "order.confirmed"]
    cancelled = [e for e in kinds if e.type == "order.cancelled"]
    assert len(confirmed) == 100
    assert len(cancelled) == 200
    assert {e.data["reason"] for e in cancelled} == {"out_of_stock"}

    rows = await caravan.sql(
        "select lot_id, received, available, reserved, sold, spoiled from inventory.lots"
        " where sku = :s order by lot_id",
        s=sku,
    )
    assert [(r.lot_id, r.received, r.available, r.reserved, r.sold, r.spoiled) for r in rows] == [
        (f"{sku}-{suffix}", quantity, 0, 0, quantity, 0) for suffix, quantity in LOTS.items()
    ]
    per_lot = await caravan.sql(
        "select l.lot_id, sum(l.quantity) from inventory.reservation_lines l"
        " join inventory.reservations r using (order_id)"
        " where r.status = 'sold' and l.lot_id like :p group by l.lot_id order by l.lot_id",
        p=f"{sku}-%",
    )
    assert [tuple(r) for r in per_lot] == [(f"{sku}-{s}", q) for s, q in LOTS.items()]
    confirmed_ids = {e.data["order_id"] for e in confirmed}
    held = await caravan.sql(
        "select order_id from inventory.reservations where status = 'sold'"
        " and order_id = any(:ids)",
        ids=list(outcomes.order_ids),
    )
    assert {r.order_id for r in held} == confirmed_ids


# The shortest a service takes (Settings.idle_timeout_refusal).
IDLE_SECONDS = RELAY_KAFKA_WAIT_SECONDS + IDLE_MARGIN_SECONDS + 1
IDLE_TIMEOUT = {"CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": f"{IDLE_SECONDS:g}"}


async def test_a_frozen_instance_holds_its_locks_no_longer_than_the_idle_timeout(
    caravan: System,
) -> None:
    """An instance frozen mid-transaction (``kill -STOP``: a paused VM or container, a stuck
    event loop) held its lot's lock until it thawed: the group handed its partitions to the
    other instance, whose reservation then waited on that lock, and no order of the SKU went
    on. PostgreSQL now ends a service's transaction idle longer than
    ``db_idle_in_transaction_timeout_seconds`` (41 s here, the shortest taken), and the other
    instance reserves the order; the thawed one finds its connection ended and retries, a
    warning, no error."""
    sku = f"INV-FROZEN-{uuid.uuid4().hex[:8]}"
    lot = f"{sku}-A"
    await caravan.seed(
        one_sku_seed(sku, 100, {"A": (10, -10, 10)}, [{**HOLD_BUYER, "credit_limit_fen": 10**9}])
    )
    await caravan.restart(("inventory",), **IDLE_TIMEOUT)
    [host] = caravan.procs.hosts(("inventory",))
    frozen = caravan.procs.procs[host]
    thawed = False
    try:
        async with caravan.row_locked("inventory.lots", "lot_id", lot) as holder:
            order_id = await place(caravan, sku, 1)
            [reserving] = await caravan.lock_waiters(holder, "the order to wait for its lot")
            await freeze(frozen.pid)
        # The lock granted to the frozen instance's statement: its transaction sits idle.
        idle = (
            "select count(*) from pg_stat_activity where pid = :p and state = 'idle in transaction'"
        )
        await caravan.until(
            lambda: caravan.scalar(idle, p=reserving), "the frozen transaction to hold the lot"
        )
        base = caravan.procs.env
        caravan.procs.env = {**base, **IDLE_TIMEOUT}
        try:
            caravan.procs.start(("inventory",), instance=2)
        finally:
            caravan.procs.env = base
        reserved = await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id
            ),
            timeout=IDLE_SECONDS + 60,
        )
        assert reserved[0].data["lines"][0]["lots"][0]["lot_id"] == lot, reserved[0].data
        os.kill(frozen.pid, signal.SIGCONT)
        thawed = True
        log = caravan.procs.log_dir / f"{host}.log"
        started = caravan.procs.logged[host]

        def lines() -> list[dict[str, object]]:
            said = log.read_bytes()[started:].decode()
            return [json.loads(line) for line in said.splitlines() if line.startswith("{")]

        await caravan.until(
            lambda: [e for e in lines() if "transient fault" in str(e.get("message"))],
            "the thawed instance to retry its ended transaction",
        )
        errors = [e for e in lines() if e.get("level") in ("error", "critical")]
        assert errors == [], errors
        caravan.procs.check_alive()
    finally:
        if not thawed:
            os.kill(frozen.pid, signal.SIGCONT)
        await asyncio.to_thread(caravan.procs.stop, ["inventory-2"])
        await caravan.restart(("inventory",))

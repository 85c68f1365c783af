"""Faults under load, with a checked history.

Orders flow at a steady rate while, one after another: poison records of every kind land on
two topics, each service is killed with SIGKILL and started again, the orders relay dies
between publishing a batch and marking it sent, PostgreSQL stops as by a crash, inventory
is scaled 1 -> 3 -> 1, and already delivered events are delivered again out of order.
Then every consumer group replays its topics from where the run began (the session's
broker holds every earlier test's records too; ``bench/soak.py`` and
``tests/e2e/test_ops.py`` replay from the earliest offset), and the history checker reads
every record of every topic and the database: zero violations.

(A Kafka node killed with SIGKILL is in ``bench/soak.py``, on a cluster of its own: the
session's single broker is shared by every other test.)
"""

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime

import pytest

from caravan import system
from caravan.reliability.load import (
    Load,
    consumer_groups,
    inject_poison,
    poison_records,
    redeliver,
    settle,
)
from shared.settings import Settings
from shared.topics import Topic
from tests.harness import System
from tests.reliability.faults import (
    FaultLog,
    Outcomes,
    all_ended,
    check_history,
    end_offsets,
    kill_and_restart,
    replay_everything,
    restart_postgres_immediate,
    scale_inventory,
)

pytestmark = pytest.mark.timeout(420)

RATE = 8.0  # orders per second
POISONED = (Topic.ORDER_REQUESTS, Topic.ORDER_EVENTS)
RESULT = system.CACHE / "reliability" / "last-run.json"


async def test_faults_under_load_leave_a_correct_history(caravan: System) -> None:
    assert caravan.producer is not None and caravan.engine is not None
    run = uuid.uuid4().hex[:6]
    load = Load(caravan.producer, run, rate=RATE)
    await caravan.seed(load.seed())
    groups = consumer_groups(Settings(DATABASE_URL=caravan.infra.database_url))
    since = await end_offsets(caravan.infra.kafka_bootstrap)
    started = datetime.now(UTC)
    first_record = len(caravan.log.records)
    faults = FaultLog()
    stop = asyncio.Event()
    driver = asyncio.create_task(load.run_until(stop))
    try:
        await asyncio.sleep(3)
        injected = await inject_poison(caravan.producer, load.source, run, POISONED)
        faults.add("poison records", faults.now())
        republished = await kill_and_restart(
            caravan, ("orders", "inventory"), faults, relay_dies_in="orders"
        )
        await kill_and_restart(caravan, ("payments", "notifications", "platform"), faults)
        await restart_postgres_immediate(caravan, faults)
        await asyncio.sleep(2)
        await scale_inventory(caravan, faults)
        redelivered = await redeliver(
            caravan.producer, caravan.log.records[first_record:], 60, random.Random(run)
        )
        faults.add("redelivered out of order", faults.now())
        await asyncio.sleep(3)
    finally:
        stop.set()
        await driver
    load_seconds = faults.now()

    outcomes = Outcomes()
    still_open = await all_ended(caravan, load, outcomes, timeout=90)
    bootstrap = caravan.infra.kafka_bootstrap
    settled = await settle(bootstrap, caravan.engine, groups, timeout=60)
    drained = faults.now()
    reread = await replay_everything(caravan, groups, since=started)
    replayed = faults.now()
    settled = await settle(bootstrap, caravan.engine, groups, timeout=60) and settled
    phases = {
        "load": round(load_seconds, 1),
        "drain": round(drained - load_seconds, 1),
        "replay": round(replayed - drained, 1),
        "settle": round(faults.now() - replayed, 1),
    }
    records, violations = await check_history(caravan, load, groups, since, injected)
    outcomes.update(caravan, load.source)
    summary = {
        "orders_requested": len(load.sent),
        "duplicate_requests": load.duplicates,
        "phases_seconds": phases,
        "outcomes": outcomes.tally(),
        "faults": faults.windows,
        "poison_records": len(injected),
        "events_republished_by_the_killed_relay": republished,
        "events_redelivered": redelivered,
        "records_replayed": reread,
        "records_checked": records,
        "violations": [str(v) for v in violations],
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))

    assert not still_open, f"{len(still_open)} orders never ended: {still_open[:5]}"
    assert settled, "the services did not catch up after the replay"
    assert violations == [], "\n".join(map(str, violations[:30]))
    # The run did what it set out to do.
    assert republished > 0, "the killed relay republished nothing"
    assert len(injected) == len(POISONED) * len(poison_records("", ""))
    tally = outcomes.tally()
    assert tally.get("confirmed", 0) > 100, tally
    assert tally.get("cancelled:out_of_stock", 0) > 0, tally
    assert tally.get("cancelled:credit_declined", 0) > 0, tally

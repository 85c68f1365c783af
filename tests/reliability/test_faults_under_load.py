"""Faults under load, with a checked history.

Orders flow at a steady rate while, one after another: poison records of every kind land on
two topics, each service is killed with SIGKILL and started again, the orders relay dies
between publishing a batch and marking it sent, PostgreSQL stops as by a crash, inventory
is scaled 1 -> 3 -> 1, and already delivered events are delivered again out of order.
Then every consumer group replays its topics from where the run began (the session's
broker holds every earlier test's records too; ``bench/soak.py`` and
``tests/e2e/test_ops.py`` replay from the earliest offset), and the history checker reads
every record of every topic and the database, the payments ledger included: zero violations.
The same, with fewer faults, for the services in two processes (``caravan up --processes
2``): each process killed.

(A Kafka node killed with SIGKILL is in ``bench/soak.py``, on a cluster of its own: the
session's single broker is shared by every other test.)
"""

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from caravan.checkout import CACHE
from caravan.reliability.history import Injected
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
RESULT = CACHE / "reliability" / "last-run.json"


@dataclass
class Run:
    """A test's orders under load, and what the checks after it need."""

    caravan: System
    load: Load
    groups: dict[str, list[str]]
    since: dict[str, dict[int, int]]  # each topic's end offsets before the run
    started: datetime
    faults: FaultLog = field(default_factory=FaultLog)

    @classmethod
    async def seeded(cls, caravan: System) -> "Run":
        assert caravan.producer is not None
        load = Load(caravan.producer, uuid.uuid4().hex[:6], rate=RATE)
        await caravan.seed(load.seed())
        return cls(
            caravan,
            load,
            consumer_groups(Settings(DATABASE_URL=caravan.infra.database_url)),
            await end_offsets(caravan.infra.kafka_bootstrap),
            datetime.now(UTC),
        )

    @contextlib.asynccontextmanager
    async def loaded(self) -> AsyncIterator[None]:
        """Orders flowing while the body injects its faults (3 s in), and 3 s after them."""
        stop = asyncio.Event()
        driver = asyncio.create_task(self.load.run_until(stop))
        try:
            await asyncio.sleep(3)
            yield
            await asyncio.sleep(3)
        finally:
            stop.set()
            await driver

    async def checked(
        self, injected: list[Injected], result: Path, **figures: int
    ) -> dict[str, int]:
        """After the load: every order ended, the services caught up, every group replayed
        from the start of the run and caught up again, and the history checked (written to
        ``result``, with ``figures``); the outcomes' tally."""
        caravan, faults, groups = self.caravan, self.faults, self.groups
        assert caravan.engine is not None
        load_seconds = faults.now()
        outcomes = Outcomes()
        still_open = await all_ended(caravan, self.load, outcomes, timeout=90)
        bootstrap = caravan.infra.kafka_bootstrap
        settled = await settle(bootstrap, caravan.engine, groups, timeout=60)
        drained = faults.now()
        reread = await replay_everything(caravan, groups, since=self.started)
        replayed = faults.now()
        settled = await settle(bootstrap, caravan.engine, groups, timeout=60) and settled
        phases = {
            "load": round(load_seconds, 1),
            "drain": round(drained - load_seconds, 1),
            "replay": round(replayed - drained, 1),
            "settle": round(faults.now() - replayed, 1),
        }
        records, violations = await check_history(caravan, self.load, groups, self.since, injected)
        outcomes.update(caravan, self.load.source)
        summary = {
            "orders_requested": len(self.load.sent),
            "duplicate_requests": self.load.duplicates,
            "phases_seconds": phases,
            "outcomes": outcomes.tally(),
            "faults": faults.windows,
            "poison_records": len(injected),
            **figures,
            "records_replayed": reread,
            "records_checked": records,
            "violations": [str(v) for v in violations],
        }
        result.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(result.write_text, json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))

        assert not still_open, f"{len(still_open)} orders never ended: {still_open[:5]}"
        assert settled, "the services did not catch up after the replay"
        assert violations == [], "\n".join(map(str, violations[:30]))
        return outcomes.tally()


async def test_faults_under_load_leave_a_correct_history(caravan: System) -> None:
    assert caravan.producer is not None
    run = await Run.seeded(caravan)
    first_record = len(caravan.log.records)
    async with run.loaded():
        injected = await inject_poison(caravan.producer, run.load.source, run.load.run, POISONED)
        run.faults.add("poison records", run.faults.now())
        republished = await kill_and_restart(
            caravan, ("orders", "inventory"), run.faults, relay_dies_in="orders"
        )
        await kill_and_restart(caravan, ("payments", "notifications", "platform"), run.faults)
        await restart_postgres_immediate(caravan, run.faults)
        await asyncio.sleep(2)
        await scale_inventory(caravan, run.faults)
        redelivered = await redeliver(
            caravan.producer,
            caravan.log.records[first_record:],
            60,
            random.Random(run.load.run),
        )
        run.faults.add("redelivered out of order", run.faults.now())
    tally = await run.checked(
        injected,
        RESULT,
        events_republished_by_the_killed_relay=republished,
        events_redelivered=redelivered,
    )
    # The run did what it set out to do.
    assert republished > 0, "the killed relay republished nothing"
    assert len(injected) == len(POISONED) * len(poison_records("", ""))
    assert tally.get("confirmed", 0) > 100, tally
    assert tally.get("cancelled:out_of_stock", 0) > 0, tally
    assert tally.get("cancelled:credit_declined", 0) > 0, tally


async def test_processes_hosting_several_services_killed_under_load_leave_a_correct_history(
    caravan: System,
) -> None:
    """The services in two processes (``caravan up --processes 2``): each process killed
    with SIGKILL under load and started again, the orders relay dying once more between
    publishing a batch and marking it sent; then the replay and the history check above."""
    hosts = ["orders+inventory", "payments+notifications+platform"]
    async with caravan.in_processes(2):
        assert list(caravan.procs.procs) == hosts
        run = await Run.seeded(caravan)
        async with run.loaded():
            republished = await kill_and_restart(
                caravan, ("orders", "inventory"), run.faults, relay_dies_in="orders"
            )
            await kill_and_restart(caravan, ("payments", "notifications", "platform"), run.faults)
        assert list(caravan.procs.procs) == hosts  # started again as they were
        tally = await run.checked(
            [],
            RESULT.with_name("last-run-2-processes.json"),
            events_republished_by_the_killed_relay=republished,
        )
    assert republished > 0, "the killed relay republished nothing"
    assert tally.get("confirmed", 0) > 50, tally

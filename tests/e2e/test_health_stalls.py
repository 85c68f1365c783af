"""``/healthz`` names a stalled consumer and a stalled outbox relay (shared/stall.py), on
the running system: inventory, with both thresholds at 2 s, its handler blocked on a row
lock (the inbox key it claims, held by the test's transaction: the check names the session
holding it) and then its relay on its outbox lock (held likewise). Each is named, degraded
with a 200, while it lasts (and its gauge says how long), and no longer once it moves; a
quiet inventory is healthy."""

import random
import re
import time
import zlib
from typing import Any

from sqlalchemy import text

from shared.events.envelope import new_event
from shared.topics import Topic
from tests.conftest import own_port
from tests.harness import System, backend_pid, order_events, ref

# Both thresholds at 2 s, and the figures sampled every second rather than every 5 s.
ENV = {
    "CARAVAN_CONSUMER_STALL_SECONDS": "2",
    "CARAVAN_OUTBOX_STALL_SECONDS": "2",
    "CARAVAN_METRICS_SAMPLE_SECONDS": "1",
}
RELAY_LOCK = zlib.crc32(b"outbox:inventory")  # shared.messaging.relay's, of the schema
OK = {"database": "ok", "kafka": "ok", "consumer": "ok", "relay": "ok"}


async def health(caravan: System) -> dict[str, Any]:
    async with caravan.api("inventory", token=None) as client:
        answer = await client.get("/healthz")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def stalled_seconds(caravan: System, gauge: str, **labels: str) -> None:
    """Wait until inventory's ``gauge`` says 4 s or more: samples after the first that saw
    the stall (that one said 0)."""
    await caravan.until(
        lambda: caravan.gauge("inventory", gauge, service="inventory", **labels),
        f"{gauge} to count the stall's seconds",
        timeout=15,
        ready=lambda seconds: seconds >= 4,
    )


async def operations_page_names_it(caravan: System, waiting: str) -> None:
    """The operations page shows inventory degraded, in its Services table too (where it
    said "up"), its consumer check as /healthz says it (``waiting``: the words before its
    seconds), marked degraded."""
    async with caravan.operations_page(own_port("http", __name__)) as board:

        async def snapshot() -> dict[str, Any]:
            got = await caravan.client.get(f"{board}/api/snapshot")
            return dict(got.json()) if got.status_code == 200 else {}

        snap = await caravan.until(
            snapshot,
            "the operations page to sample inventory's health",
            ready=lambda snap: snap.get("health", {}).get("inventory") == "degraded",
        )
        assert snap["checks"]["inventory"]["consumer"].startswith(waiting), snap["checks"]
        page = (await caravan.client.get(f"{board}/")).text
    services, health = page.split("<h2>Services</h2>")[1].split("<h2>Health</h2>")
    assert "<tr><td>inventory</td><td class='degraded'>degraded" in services, services
    row = re.search(r"<tr><td>inventory</td><td class='degraded'>degraded</td>.*?</tr>", health)
    assert row is not None, page
    assert f"<td class='degraded'>{waiting}, none handled for " in row[0], row[0]


async def test_healthz_names_a_stalled_consumer_then_a_stalled_relay_while_each_lasts(
    caravan: System,
) -> None:
    assert caravan.engine is not None
    await caravan.restart(("inventory",), **ENV)
    try:
        # Quiet: samples find nothing waiting, past the threshold (a round of samples with
        # no failure ended over 2 s after inventory was ready).
        ready = time.time()
        await caravan.until(
            lambda: caravan.gauge("inventory", "caravan_observed_at_seconds", service="inventory"),
            "a sample past the threshold",
            ready=lambda at: at > ready + 2,
        )
        assert (await health(caravan))["status"] == "ok"
        phone = "+86136" + "".join(random.choices("0123456789", k=8))
        order = order_events(ref("HEALTH"), phone)
        event = new_event(order.placed, source="caravan/orders")
        async with caravan.engine.connect() as inbox, caravan.engine.connect() as relay:
            blocking = await inbox.begin()
            await inbox.execute(
                text("insert into inventory.inbox (key, topic) values (:k, :t)"),
                {"k": f"{event.source}|{event.id}", "t": Topic.ORDER_EVENTS.value},
            )
            holding = await relay.begin()
            await relay.execute(text("select pg_advisory_xact_lock(:k)"), {"k": RELAY_LOCK})
            await caravan.publish_event(event, order.placed)
            stalled = await caravan.until(
                lambda: health(caravan),
                "inventory's consumer named stalled",
                ready=lambda h: h["checks"].get("consumer", "ok") != "ok",
            )
            said = stalled["checks"]["consumer"]
            # The handler waits for the test's lock, logging nothing: the check says who holds it.
            found = re.fullmatch(
                r"1 record waiting on orders\.events\.v1\[(\d+)\], none handled for \d+ s;"
                r" 1 of its sessions waits for a lock \(for \d+ s\), held by PostgreSQL"
                r" session (\d+)",
                said,
            )
            assert found, said
            assert int(found.group(2)) == await backend_pid(inbox), said
            assert (stalled["status"], stalled["down"]) == ("degraded", ["consumer"])
            await operations_page_names_it(caravan, said.split(", none handled")[0])
            partition = {"topic": Topic.ORDER_EVENTS.value, "partition": found.group(1)}
            await stalled_seconds(caravan, "caravan_consumer_stalled_seconds", **partition)
            await blocking.rollback()  # the handler's claim goes through: it is handled
            stalled = await caravan.until(
                lambda: health(caravan),
                "inventory's relay named stalled, its consumer no longer",
                ready=lambda h: h["checks"]["consumer"] == "ok" and h["checks"]["relay"] != "ok",
            )
            said = stalled["checks"]["relay"]
            assert re.fullmatch(r"\d+ outbox rows? unsent, none published for \d+ s", said), said
            assert (stalled["status"], stalled["down"]) == ("degraded", ["relay"])
            await stalled_seconds(caravan, "caravan_outbox_stalled_seconds")
            assert not caravan.log.events(Topic.INVENTORY_EVENTS, order_id=order.placed.order_id)
            await holding.rollback()
        await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.INVENTORY_EVENTS, type="stock.rejected", order_id=order.placed.order_id
            )
        )
        assert await caravan.until(
            lambda: health(caravan), "inventory healthy again", ready=lambda h: h["status"] == "ok"
        ) == {"status": "ok", "checks": OK}
    finally:
        await caravan.restart(("inventory",))

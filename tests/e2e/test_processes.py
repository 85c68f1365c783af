"""The five services in two processes (``caravan up --processes 2``): the saga runs as with
five, and each hosted service keeps its own credentials, metrics, spans and log lines."""

import json
import re
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import SERVICES
from shared.topics import Topic
from tests.conftest import own_port
from tests.e2e.test_saga import order
from tests.e2e.test_tracing import spans
from tests.harness import System, process_env

STARTED = re.compile(r"(\w+) (started|stopping)(: .+)?")
"""A service's line saying it started (with what: the platform adapter's apps) or stops."""
HOSTS: dict[str, tuple[str, ...]] = {
    "orders+inventory": ("orders", "inventory"),
    "payments+notifications+platform": ("payments", "notifications", "platform"),
}


@pytest.fixture
async def in_two_processes(caravan: System, tmp_path: Path) -> AsyncIterator[Path]:
    """The session's services in two processes, tracing to the folder yielded."""
    trace_dir = tmp_path / "traces"
    async with caravan.in_processes(2, CARAVAN_TRACE_DIR=str(trace_dir)):
        yield trace_dir


def consumption(page: str) -> dict[str, float]:
    """The records consumed, per service, that a ``/metrics`` page shows."""
    consumed: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "caravan_records_consumed_total":
                service = sample.labels["service"]
                consumed[service] = consumed.get(service, 0.0) + sample.value
    return consumed


async def pages(caravan: System) -> dict[str, dict[str, float]]:
    """What each service's port shows of consumption, per service."""
    shown = {}
    for service in SERVICES:
        async with caravan.api(service) as client:
            shown[service] = consumption((await client.get("/metrics")).text)
    return shown


async def test_two_processes_run_the_saga_each_service_under_its_own_name(
    caravan: System, in_two_processes: Path
) -> None:
    assert list(caravan.procs.procs) == list(HOSTS)
    assert caravan.procs.services() == list(SERVICES)

    # Each process holds its services' database URLs and nobody else's, and no admin login.
    for key, hosted in HOSTS.items():
        env = process_env(caravan.procs.procs[key].pid)
        assert "DATABASE_URL" not in env
        urls = {k.removeprefix("CARAVAN_DATABASE_URL_").lower() for k in env}
        assert urls & set(SERVICES) == set(hosted)

    req = order()
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    await caravan.wait_for(lambda: caravan.log.events(Topic.NOTIFICATION_EVENTS, order_id=order_id))

    # Each service's port shows its own consumption only, though its process has another's.
    shown = await caravan.until(
        lambda: pages(caravan),
        lambda last: f"consumption shown: {last}",
        ready=lambda shown: all(shown.values()),
    )
    assert {name: set(seen) for name, seen in shown.items()} == {
        service: {service} for service in SERVICES
    }

    # A service's own figures without a service label are its port's alone: inventory's,
    # in orders' process, showed orders' ended orders, which Prometheus counted twice.
    ended_on = set()
    for service in SERVICES:
        async with caravan.api(service) as client:
            if "caravan_orders_ended_total{" in (await client.get("/metrics")).text:
                ended_on.add(service)
    assert ended_on == {"orders"}

    # So the operations page, which reads each instance's port, counts each service's
    # consumption once: what its own port shows, not its process's.
    port = own_port("http", __name__)

    async def page_and_ports() -> tuple[dict[str, Any], dict[str, float]]:
        snap = await caravan.client.get(f"http://127.0.0.1:{port}/api/snapshot")
        own = {service: seen.get(service, 0.0) for service, seen in (await pages(caravan)).items()}
        return snap.json(), own

    async with caravan.operations_page(port):
        snap, _ = await caravan.until(
            page_and_ports,
            lambda last: f"the operations page's consumption, and the ports': {last}",
            ready=lambda last: last[0]["consumed"] == last[1],
        )
    assert snap["down"] == []

    # Each service's spans name it, in a file of its own; the order's trace spans the four a
    # storefront's order passes through (the platform adapter skips it unclaimed: no span).
    expected = {f"caravan-{service}" for service in SERVICES if service != "platform"}

    def order_traced() -> set[object]:
        found = spans(in_two_processes)
        ours = {s["trace_id"] for s in found if order_id in str(s["attributes"])}
        return {s["service"] for s in found if s["trace_id"] in ours}

    await caravan.until(order_traced, "spans of the four", ready=lambda named: named == expected)
    for service in SERVICES:  # HTTP spans too (not a poll's: /healthz and /metrics have none)
        async with caravan.api(service) as client:
            assert (await client.get(f"/{service}-asked")).status_code == 404

    def asked(service: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        # Its file may hold nothing yet when first read: read again till the span is written.
        own = spans(in_two_processes, service)
        return own, [s for s in own if s["attributes"].get("url.path") == f"/{service}-asked"]  # type: ignore[attr-defined]

    for service in SERVICES:
        own, _ = await caravan.until(
            partial(asked, service),
            f"{service}'s span of its request",
            ready=lambda found: found[1],
        )
        assert {s["service"] for s in own} == {f"caravan-{service}"}

    # Each service's log lines name it, though they go to one log.
    for key, hosted in HOSTS.items():
        log = (caravan.procs.log_dir / f"{key}.log").read_text().splitlines()
        lines = [json.loads(line) for line in log if line.startswith("{")]
        # "orders started", "platform started: apps ...", "orders stopping": by the service
        said = [(line, STARTED.fullmatch(line["message"])) for line in lines]
        started = {line["service"] for line, m in said if m and m[2] == "started"}
        assert started == set(hosted)
        for line, m in said:
            assert m is None or m[1] == line["service"], line

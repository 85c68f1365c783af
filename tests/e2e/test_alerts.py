"""The alerting rules of ``infra/prometheus/`` against the running services: every series
they read is served, and a real Prometheus, scraping the services as the example
configuration does, fires an alert when what it watches happens."""

import asyncio
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from caravan.checkout import REPO_ROOT
from caravan.infra.prometheus import ensure_prometheus
from services import SERVICES
from shared.topics import Topic
from tests.harness import System, free_port, until

RULES = REPO_ROOT / "infra" / "prometheus"
EXPRESSIONS = re.findall(r"^\s+expr: (.+)$", (RULES / "alerts.yml").read_text(), re.M)


async def families(caravan: System) -> list[Metric]:
    """Every metric family of every service's ``/metrics``, as each serves it."""
    served: list[Metric] = []
    for service in SERVICES:
        async with caravan.api(service) as client:
            page = (await client.get("/metrics")).text
        served.extend(text_string_to_metric_families(page))
    return served


async def served(caravan: System) -> dict[str, list[dict[str, str]]]:
    """Every sample's labels, by sample name, of every service's ``/metrics``."""
    samples: dict[str, list[dict[str, str]]] = defaultdict(list)
    for family in await families(caravan):
        for sample in family.samples:
            samples[sample.name].append(sample.labels)
    return samples


def grouped_by(expr: str, name: str) -> set[str]:
    """The labels each ``by (...)`` of ``expr`` whose argument reads ``name`` groups by: one
    expression may group two series each by its own labels."""
    labels: set[str] = set()
    for by in re.finditer(r"by \(([^)]*)\) \(", expr):
        depth, end = 1, by.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        if re.search(rf"\b{name}\b", expr[by.end() : end]):
            labels |= {label.strip() for label in by.group(1).split(",")}
    return labels


async def test_every_series_an_alert_reads_is_served_with_its_labels(caravan: System) -> None:
    """A metric renamed, or a label or status an alert matches on dropped, would leave its
    alert silent for ever: each name, each label it groups by and each value it matches is
    in some service's ``/metrics``."""
    samples = await served(caravan)
    checked = 0
    for expr in EXPRESSIONS:
        names = re.findall(r"\b(caravan_\w+)", expr)
        for name in names:
            assert samples.get(name), f"{name} ({expr}) is served by no service"
            for label in grouped_by(expr, name):
                assert all(label in s for s in samples[name]), f"{name} has no label {label}"
            matched = re.search(rf"{name}\{{([^}}]*)\}}", expr)
            for label, value in re.findall(r'(\w+)="([^"]*)"', matched.group(1) if matched else ""):
                assert any(s.get(label) == value for s in samples[name]), (name, label, value)
            checked += 1
    assert checked >= len(EXPRESSIONS) - 1  # all but `up`, Prometheus's own


async def test_every_series_served_is_named_in_the_operations_guide(caravan: System) -> None:
    """An operator writes a dashboard's queries and their own alerts from docs/operations.md:
    the outbox's backlog and oldest row, the records produced, the handlers' latency and the
    platforms' status API calls were described there in words only, under no name to query.
    Each family of ours is named as it is queried (a counter with its ``_total``); none is a
    ``_created`` series (prometheus_client's, when a series began: not served)."""
    guide = (REPO_ROOT / "docs" / "operations.md").read_text()
    names = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in await families(caravan)
        if family.name.startswith("caravan_")
    }
    assert len(names) > 40
    assert sorted(name for name in names if f"`{name}`" not in guide) == []


@asynccontextmanager
async def prometheus(caravan: System, folder: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A Prometheus loading alerts.yml and scraping the services every second, with a token of
    the scope ``metrics`` (as infra/prometheus/prometheus.yml does); a client of its API."""
    token = await caravan.issue_token(f"prometheus-{uuid.uuid4().hex[:8]}", "metrics")
    (folder / "prometheus.token").write_text(token + "\n")
    config = (RULES / "prometheus.yml").read_text()
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
    config = config.replace("evaluation_interval: 15s", "evaluation_interval: 1s")
    config = config.replace("  - alerts.yml", f"  - {RULES / 'alerts.yml'}")
    for default, service in enumerate(SERVICES, start=8080):  # caravan up's ports: the session's
        config = config.replace(
            f"- targets: [127.0.0.1:{default}]", f"- targets: [127.0.0.1:{caravan.port(service)}]"
        )
    (folder / "prometheus.yml").write_text(config)
    port = free_port()
    binary = ensure_prometheus(REPO_ROOT) / "prometheus"
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
            yield api
    finally:
        proc.terminate()
        await proc.wait()


async def ask(api: httpx.AsyncClient, path: str, **params: str) -> Any:
    try:
        answer = await api.get(path, params=params)
    except httpx.TransportError:
        return None  # not listening yet
    return answer.json()["data"] if answer.status_code == 200 else None


def firing(alerts: Any, alertname: str, **labels: str) -> list[dict[str, str]]:
    """The labels of each alert of ``/api/v1/alerts``' answer named ``alertname``, firing,
    whose labels include ``labels``."""
    return [
        a["labels"]
        for a in (alerts or {}).get("alerts", [])
        if a["labels"]["alertname"] == alertname
        and labels.items() <= a["labels"].items()
        and a["state"] == "firing"
    ]


async def scraped_twice(api: httpx.AsyncClient, series: str) -> None:
    """Until Prometheus has scraped ``series`` twice: an ``increase`` over it sees the next
    change."""
    await until(
        lambda: ask(api, "/api/v1/query", query=f"count_over_time({series}[1m]) >= 2"),
        f"two scrapes of {series}",
        timeout=30,
        every=0.5,
        ready=lambda data: data and data["result"],
    )


async def fired(api: httpx.AsyncClient, alertname: str, **labels: str) -> dict[str, str]:
    """The labels of the one alert named ``alertname`` with ``labels``, once it fires."""
    alerts = await until(
        lambda: ask(api, "/api/v1/alerts"),
        f"{alertname} firing",
        timeout=30,
        every=0.5,
        ready=lambda said: firing(said, alertname, **labels),
    )
    (alert,) = firing(alerts, alertname, **labels)
    return alert


async def test_prometheus_fires_the_dead_letter_alert_for_a_record_dead_lettered(
    caravan: System, tmp_path: Path
) -> None:
    """Prometheus scrapes every service with the example configuration's token (each target
    up, labelled with its service), sees the counter of dead letters of
    ``orders.requests.v1`` at its value, and once a record that is not JSON is
    dead-lettered, fires ``CaravanDeadLetters`` naming the service, the topic and the
    error."""
    letters = 'caravan_dead_letters_total{topic="orders.requests.v1", error="not_json"}'

    async with prometheus(caravan, tmp_path) as api:
        targets = await until(
            lambda: ask(api, "/api/v1/targets"),
            "every service scraped",
            timeout=30,
            every=0.5,
            ready=lambda t: (
                t
                and len(t["activeTargets"]) == len(SERVICES)
                and all(target["health"] == "up" for target in t["activeTargets"])
            ),
        )
        assert {t["labels"]["job"] for t in targets["activeTargets"]} == {"caravan"}
        # Each target under its service: `up` says which service did not answer (the alert of
        # a consumer group with no member reads it), the samples' own `service` label stands.
        up = await ask(api, "/api/v1/query", query='up{job="caravan"}')
        assert sorted(r["metric"].get("service", "") for r in up["result"]) == sorted(SERVICES)
        renamed = await ask(api, "/api/v1/query", query='{job="caravan", exported_service!=""}')
        assert renamed["result"] == [], renamed["result"][:1]
        await scraped_twice(api, letters)
        said = await ask(api, "/api/v1/alerts")
        assert firing(said, "CaravanDeadLetters", error="not_json") == []

        await caravan.publish_raw(Topic.ORDER_REQUESTS.value, b"not json", uuid.uuid4().bytes)
        alert = await fired(api, "CaravanDeadLetters", error="not_json")
    assert alert == {
        "alertname": "CaravanDeadLetters",
        "severity": "warning",
        "service": "orders",
        "topic": "orders.requests.v1",
        "error": "not_json",
    }

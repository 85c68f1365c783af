"""The documents the services serve: the orders service's AsyncAPI (every topic and event
type of the contract), and each service's OpenAPI (fuzzed with schemathesis against the
running service)."""

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from caravan.checkout import REPO_ROOT
from shared.topics import ALL_TOPICS, EventType, Topic
from tests.harness import System, raw_event, until

CONTRACT = REPO_ROOT.parent / "shared" / "CONTRACT.md"


def contract_names(text: str) -> tuple[set[str], set[str]]:
    """The topics and the event types that CONTRACT.md names."""
    topics = set(re.findall(r"`([a-z]+\.[a-z]+\.v\d+)`", text))
    types: set[str] = set()
    for line in text.splitlines():
        if line.startswith("Key:") and "Type" in line:  # "Key: ... Type(s): `a.b`, ..."
            types |= set(re.findall(r"`([a-z]+\.[a-z_]+)`", line.split("Type", 1)[1]))
        if match := re.match(r"\| `([a-z]+\.[a-z_]+)` \|", line):  # a row of a types table
            types.add(match.group(1))
    return topics, types


def _walk(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def event_types(document: dict[str, Any], schema: Any) -> set[str]:
    """The CloudEvent ``type`` constants a message payload schema allows."""
    if "$ref" in schema:
        return event_types(document, _walk(document, schema["$ref"]))
    found: set[str] = set()
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= event_types(document, option)
    const = schema.get("properties", {}).get("type", {}).get("const")
    if const is not None:
        found.add(const)
    return found


def types_by_topic(document: dict[str, Any]) -> dict[str, set[str]]:
    """For each topic (channel address), the event types of its messages."""
    found: dict[str, set[str]] = {}
    for channel in document["channels"].values():
        types = found.setdefault(channel["address"], set())
        for message in channel["messages"].values():
            payload = _walk(document, message["$ref"])["payload"]
            types |= event_types(document, payload)
    return found


async def test_asyncapi_names_every_topic_and_event_type_of_the_contract(caravan: System) -> None:
    response = await caravan.client.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"].startswith("3.")
    topics = types_by_topic(document)
    contract_topics, contract_types = contract_names(CONTRACT.read_text())
    assert {"orders.requests.v1", "orders.events.v1", "notifications.events.v1"} <= contract_topics
    assert {"order.requested", "order.rejected", "sms.failed"} <= contract_types
    assert contract_topics | set(ALL_TOPICS) <= set(topics)
    documented = set().union(*topics.values())
    assert contract_types | {t.value for t in EventType} <= documented
    # Each type is documented on its own topic, e.g. the storefronts' one on the requests topic.
    assert topics["orders.requests.v1"] == {"order.requested"}
    assert {"order.placed", "order.rejected"} <= topics["orders.events.v1"]
    assert "stock.expired" in topics["inventory.events.v1"]
    # A terminal event names its order's source: an order_ref is unique only per source.
    schemas = document["components"]["schemas"]
    assert all("source" in schemas[t]["properties"] for t in ("OrderConfirmed", "OrderCancelled"))
    receivers = {name for name, op in document["operations"].items() if op["action"] == "receive"}
    assert "orders:inventory.events.v1" in receivers and "payments:orders.events.v1" in receivers
    page = await caravan.client.get("/asyncapi")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "orders.events.v1" in page.text


TOPICS_DOC = REPO_ROOT / "docs" / "topics.md"


async def _run_example(caravan: System, script: str, *args: str) -> str:
    """A page's Python example run as written with the checkout's Python against the
    session's broker; what it printed."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-", *args],
        input=script,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": caravan.infra.kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_topics_page_example_places_an_order_on_the_requests_topic(
    caravan: System,
) -> None:
    """A storefront developer found the CloudEvent envelope in the docs but no way to publish
    one, and wrote an aiokafka script of their own: docs/topics.md gives one, run here as
    written (its order_ref made unique, its broker the session's) with the checkout's Python."""
    text = TOPICS_DOC.read_text()
    script = text.split(".venv/bin/python - <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    order_ref = f"DOC-{uuid.uuid4().hex[:12]}"
    assert script.count('"SWN-000124"') == 1
    script = script.replace('"SWN-000124"', f'"{order_ref}"')
    await _run_example(caravan, script)
    order_id = await caravan.placed(order_ref, source="storefront/shawan-center")
    placed = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_id=order_id)
    assert placed[0].data["delivery"] == {"county": "Shawan", "address": "Village 3, Sandaohezi"}
    assert (await caravan.outcome(order_id)).type in {"order.confirmed", "order.cancelled"}

    # "What a buyer was texted": the page's consumer, run as written, prints the order's texts.
    def texted() -> list[Any]:
        return caravan.log.events(Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id)

    sent = await until(texted, f"an sms.sent about {order_id}")
    reader = text.split(".venv/bin/python - \"$ORDER_ID\" <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    read = await _run_example(caravan, reader, order_id)
    said = [line for line in read.splitlines() if line.startswith("sms.sent ")]
    # Each text seen (the buyer's, a seller's: in no set order) is among those it printed.
    assert all(any(line.endswith(e.data["text"]) for line in said) for e in sent), read


async def test_a_request_naming_another_dataschema_is_placed_as_v1_as_the_topics_page_says(
    caravan: System,
) -> None:
    """An order.requested whose dataschema names a v2 schema was placed as v1, and no page
    said so. docs/topics.md says it is read as v1's whatever it names (the contract versions
    by topic): the request it quotes is placed, as v1 reads it."""
    text = TOPICS_DOC.read_text().split("## Where Caravan says more than the contract")[1]
    [named] = re.findall(r'`"dataschema": "([^"]+)"`', text)
    order_ref = f"DOC-{uuid.uuid4().hex[:12]}"
    data = {
        "order_ref": order_ref,
        "buyer": {"id": "t-rich", "phone": "+8613900000001", "locale": "en"},
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
        "payment": {"method": "prepaid"},
        "delivery": {"county": "Shawan", "address": "Village 3"},
    }
    event = {**raw_event("order.requested", data, source="storefront/t-v2"), "dataschema": named}
    await caravan.publish_raw(
        Topic.ORDER_REQUESTS.value, json.dumps(event).encode(), key=order_ref.encode()
    )
    order_id = await caravan.placed(order_ref, source="storefront/t-v2")
    [placed] = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_id=order_id)
    assert placed.data["lines"] == [{"sku": "T-PEPPER", "quantity": 1}], placed
    letters = [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == order_ref.encode()]
    assert letters == []


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class _FromAddress(HTTPAdapter):
    """Connections from one loopback address of the fuzz's own: its negative cases mangle the
    Authorization header too, and the failed attempts they make must not get the address the
    other tests call from throttled (429) by the orders service."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def fuzz(base_url: str, token: str, examples: int, schema: BaseSchema) -> list[str]:
    """Run schemathesis over each operation of ``schema`` (filtered as the caller chose);
    returns the operations it exercised."""
    session = requests.Session()
    session.mount("http://", _FromAddress("127.0.3.1"))
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err would be a schema error
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=examples,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(
                base_url=base_url,
                session=session,
                checks=CHECKS,
                headers={"Authorization": f"Bearer {token}"},
            )

        call()
        exercised.append(operation.label)
    return exercised


FUZZED = {
    "orders": [
        "GET /healthz",
        "GET /metrics",
        "GET /ops/stuck-orders",
        "GET /orders",
        "GET /orders/{order_id}",
        "POST /orders",
        "POST /orders/{order_id}/cancel",
    ],
    "inventory": [
        "GET /lots/{lot_id}",
        "GET /lots/{lot_id}/adjustments",
        "GET /lots/{lot_id}/holds",
        "GET /reports/spoiled",
        "GET /sellers",
        "GET /stock",
        "GET /stock/{sku}",
        "PATCH /lots/{lot_id}",
        "POST /lots",
        "POST /lots/{lot_id}/adjustments",
        "PUT /lots/{lot_id}/selling",
    ],
    "payments": [
        "GET /credit-lines/{buyer_id}",
        "GET /loans",
        "GET /loans/{loan_id}",
        "GET /orders/{order_id}/payment",
        "GET /payables",
        "GET /payables/{seller_id}/orders",
        "GET /payments",
        "GET /repayments",
        "POST /credit-lines/{buyer_id}/adjustments",
        "POST /loans/{loan_id}/repayments",
        "POST /orders/{order_id}/payment/charge-lost",
        "POST /orders/{order_id}/payment/refund",
        "POST /orders/{order_id}/payment/void",
        "PUT /credit-lines/{buyer_id}",
    ],
    "notifications": [
        "DELETE /opt-outs/{phone}",
        "GET /opt-outs/{phone}",
        "GET /sms",
        "POST /sms/receipts",
        "PUT /opt-outs/{phone}",
    ],
    "platform": [
        "DELETE /platform/{app}/mappings/{kind}/{external_id}",
        "GET /platform/callbacks",
        "GET /platform/problems",
        "GET /platform/{app}/mappings",
        "GET /platform/{app}/mappings/{kind}/{external_id}",
        "POST /platform/problems/resolve",
        "POST /platform/refetch",
        "POST /platform/{app}/push",
        "PUT /platform/{app}/mappings/{kind}/{external_id}",
    ],
}
"""Each service's operations the fuzz calls: the shared ``/healthz`` and ``/metrics`` on the
orders service only, and not ``POST /platform/callbacks/retry``, whose valid call ``{}``
would send again every failed callback of the tests after this one."""


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("service", FUZZED)
async def test_schemathesis_finds_no_5xx_and_only_documented_answers(
    caravan: System, service: str
) -> None:
    base_url = f"http://127.0.0.1:{caravan.port(service)}"
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json").exclude(tag="documentation")
    if service != "orders":
        schema = schema.exclude(path=["/healthz", "/metrics", "/platform/callbacks/retry"])
    examples = 25 if service == "orders" else 10
    exercised = await asyncio.to_thread(fuzz, base_url, caravan.token, examples, schema)
    assert sorted(exercised) == FUZZED[service]

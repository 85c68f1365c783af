"""One order's saga is one trace across the services, carried through Kafka headers."""

import asyncio
import json
import secrets
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from aiokafka import ConsumerRecord
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from caravan import system
from caravan.ops import dlq as ops_dlq
from services import SERVICES
from shared.http import POLLS
from shared.topics import Topic
from tests.e2e.test_saga import invalid_request, order
from tests.harness import System, free_port, raw_event, ref


def spans(trace_dir: Path, service: str = "*") -> list[dict[str, object]]:
    """The spans written in ``trace_dir`` (by ``service``'s file only, if named)."""
    found = []
    for path in trace_dir.glob(f"{service}.jsonl"):
        found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


async def test_one_orders_spans_cover_all_the_services(caravan: System, tmp_path: Path) -> None:
    trace_dir = tmp_path / "traces"
    await caravan.restart(SERVICES, CARAVAN_TRACE_DIR=str(trace_dir))
    try:
        # Prepaid: the charge is made later by the gateway loop, which continues the trace.
        req = order()
        await caravan.request(req)
        order_id = await caravan.placed(req.order_ref)
        assert (await caravan.outcome(order_id)).type == "order.confirmed"
        await caravan.wait_for(
            lambda: caravan.log.events(Topic.NOTIFICATION_EVENTS, order_id=order_id)
        )

        def of_order() -> list[dict[str, object]]:
            return [
                s
                for s in spans(trace_dir)
                if s["attributes"].get("caravan.order_id") == order_id  # type: ignore[attr-defined]
            ]

        # The services a storefront's order passes through: the platform adapter, which
        # follows its own platform's orders alone, skips this one's events unclaimed (no span).
        expected = {
            "caravan-orders",
            "caravan-inventory",
            "caravan-payments",
            "caravan-notifications",
        }

        def once_all_have_written() -> list[dict[str, object]]:
            found = of_order()
            traces = {s["trace_id"] for s in found}
            written = {s["service"] for s in spans(trace_dir) if s["trace_id"] in traces}
            return found if written >= expected else []

        # Each service writes its spans in its own time: wait until every one has, not for
        # a number of spans (one service's several spans could make up the count).
        found = await caravan.wait_for(once_all_have_written)
        traces = {s["trace_id"] for s in found}
        assert len(traces) == 1, traces
        trace_id = traces.pop()
        services = {s["service"] for s in spans(trace_dir) if s["trace_id"] == trace_id}
        assert services == expected
        # Every consumer span but the first continues a parent from another span.
        in_trace = [s for s in spans(trace_dir) if s["trace_id"] == trace_id]
        assert sum(1 for s in in_trace if s["parent_id"] is None) == 1
        # The storefront's request names its ref as its ref, and the order it placed by its
        # id: its caravan.order_id was the ref, and a search by the order's id missed it.
        (asked,) = [s for s in in_trace if s["name"] == f"{Topic.ORDER_REQUESTS} process"]
        attributes = asked["attributes"]
        assert attributes["caravan.order_ref"] == req.order_ref, attributes  # type: ignore[index]
        assert attributes["caravan.order_id"] == order_id, attributes  # type: ignore[index]
        # The text is sent by the dispatcher later, in the order's trace, and sms.sent carries
        # it on (it was sent with no trace context at all).
        await caravan.wait_for(
            lambda: [
                s
                for s in spans(trace_dir, "notifications")
                if s["trace_id"] == trace_id and s["name"] == "notifications sms send"
            ]
        )
        texts = [
            r
            for r in caravan.log.raw(Topic.NOTIFICATION_EVENTS)
            if b'"sms.sent"' in r.value and order_id.encode() in r.value
        ]
        assert texts and all(
            trace_id in dict(r.headers).get("traceparent", b"").decode() for r in texts
        )

        # HTTP spans are named after their route: not one name per order, and no phone
        # number in a name or a path (a number was written whole into the trace files).
        # The polls of load balancers and Prometheus are not traced (most spans were theirs).
        assert (await caravan.client.get("/healthz")).status_code == 200
        assert (await caravan.client.head("/healthz")).status_code == 200
        assert (await caravan.client.get("/metrics")).status_code == 200
        assert (await caravan.client.get(f"/orders/{order_id}")).status_code == 200
        phone = "+8613912340000"
        async with caravan.api("notifications") as notifications:
            assert (await notifications.get(f"/opt-outs/{phone}")).status_code == 200

        def served() -> list[dict[str, object]]:
            return [s for s in spans(trace_dir) if s["name"] == "GET /opt-outs/{phone}"]

        await caravan.wait_for(served)
        # Each service writes its spans in its own time: orders' may come after those.
        await caravan.wait_for(
            lambda: [s for s in spans(trace_dir, "orders") if s["name"] == "GET /orders/{order_id}"]
        )
        # One span a request (FastAPI's own made a second, a trace of its own).
        assert len(served()) == 1, served()
        polls = [s for s in spans(trace_dir) if s["name"].split(" ")[-1] in POLLS]  # type: ignore[attr-defined]
        assert polls == [], polls
        written = "".join(p.read_text() for p in trace_dir.glob("*.jsonl"))
        assert phone not in written and order_id not in {str(s["name"]) for s in spans(trace_dir)}
    finally:
        await caravan.restart(SERVICES)
        await asyncio.sleep(0)


def trace_ids(caravan: System, topic: str, event_type: str, key: str) -> list[str | None]:
    """The trace id in the ``traceparent`` header (None: no header) of each record of ``topic``
    that says ``event_type`` and ``key`` (an order id or ref)."""
    return [
        trace_id(r)
        for r in caravan.log.raw(topic)
        if f'"{event_type}"'.encode() in r.value and key.encode() in r.value
    ]


def trace_id(record: ConsumerRecord) -> str | None:
    traceparent = dict(record.headers).get("traceparent")
    return traceparent.decode().split("-")[1] if traceparent else None


async def test_the_expiry_sweeps_tell_an_orders_end_in_its_trace(caravan: System) -> None:
    """An order past its deadline is cancelled (``expired``) by the orders' sweep, an overdue
    hold reported (``stock.expired``) by inventory's: each in the order's trace, that of the
    request placing it (they were emitted in no span, each the root of a trace of its own).
    Payments is stopped: nothing settles the orders first."""
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        late, held = order(), order()
        ids = []
        for req in (late, held):
            await caravan.request(req)
            order_id = await caravan.placed(req.order_ref)
            reserved = partial(caravan.log.events, Topic.INVENTORY_EVENTS, order_id=order_id)
            await caravan.wait_for(partial(reserved, type="stock.reserved"))
            ids.append(order_id)
        late_id, held_id = ids
        await caravan.execute(
            "update orders.orders set deadline_at = now() - interval '1 hour' where order_id = :o",
            o=late_id,
        )
        await caravan.execute(
            "update inventory.reservations set created_at = created_at - interval '30 days'"
            " where order_id = :o",
            o=held_id,
        )
        for order_id in ids:
            outcome = await caravan.outcome(order_id)
            assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "expired")
        orders = Topic.ORDER_EVENTS.value
        for order_id in ids:
            [placed] = trace_ids(caravan, orders, "order.placed", order_id)
            assert placed is not None
            cancelled = await caravan.wait_for(
                partial(trace_ids, caravan, orders, "order.cancelled", order_id)
            )
            assert cancelled == [placed], order_id
        [placed] = trace_ids(caravan, orders, "order.placed", held_id)
        inventory = Topic.INVENTORY_EVENTS.value
        assert trace_ids(caravan, inventory, "stock.expired", held_id) == [placed]
    finally:
        caravan.procs.start(("payments",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)


async def publish_in_a_trace(caravan: System, order_ref: str, value: bytes) -> str:
    """Publish ``value`` on the requests' topic, keyed by ``order_ref``, with a trace context
    of its own: its trace id."""
    trace = secrets.token_hex(16)
    headers: list[tuple[str, bytes | None]] = [
        ("traceparent", f"00-{trace}-{secrets.token_hex(8)}-01".encode())
    ]
    await caravan.publish_raw(
        Topic.ORDER_REQUESTS.value, value, key=order_ref.encode(), headers=headers
    )
    return trace


async def test_an_invalid_request_is_answered_in_its_trace(caravan: System) -> None:
    """The ``order.rejected`` answering an invalid ``order.requested`` continues the trace the
    request's headers carry (it was emitted in no span: a trace of its own)."""
    order_ref = ref("BAD")
    trace = await publish_in_a_trace(caravan, order_ref, invalid_request(order_ref))
    rejected = await caravan.wait_for(
        lambda: trace_ids(caravan, Topic.ORDER_EVENTS.value, "order.rejected", order_ref)
    )
    assert rejected == [trace]


async def test_a_request_with_no_ref_is_logged_under_its_correlation_id(caravan: System) -> None:
    """A storefront's request dead-lettered before its order_ref is known (it names none),
    whose correlation id is its event id, is answered ``order.rejected`` under that id: its
    lines said the event id as their ``order_id`` (a search by an order's id found an event's).
    They say it as ``correlation_id``, and no line names it an order."""
    event = raw_event(
        "order.requested",
        {
            "buyer": {"id": "t-rich", "phone": "+8613912345678", "locale": "en"},
            "lines": [{"sku": "T-PEPPER", "quantity": 1}],
            "payment": {"method": "microloan"},
        },
    )
    request_id = event["id"]
    value = orjson.dumps({**event, "correlationid": request_id})
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, value, key=request_id.encode())
    await caravan.wait_for(
        lambda: trace_ids(caravan, Topic.ORDER_EVENTS.value, "order.rejected", request_id)
    )

    def lines() -> list[dict[str, str]]:
        return [
            entry
            for path in caravan.procs.log_dir.glob("*.log")
            for line in path.read_text(errors="replace").splitlines()
            if request_id in line and line.startswith("{")
            for entry in [json.loads(line)]
        ]

    said = await caravan.wait_for(lambda: [e for e in lines() if "dead-lettering" in e["message"]])
    assert [e for e in lines() if e.get("order_id") == request_id] == []
    assert all(e["correlation_id"] == request_id for e in said), said


async def test_a_dead_letter_carries_its_records_trace_on_through_a_redrive(
    caravan: System,
) -> None:
    """A dead letter carries the trace context of its record (a record that is no JSON, an
    invalid request), and a redrive sends the letter on in that trace: both had none."""
    dlq = Topic.ORDER_REQUESTS.dlq
    not_json, invalid = ref("POISON"), ref("BAD")
    keys = {
        order_ref.encode(): await publish_in_a_trace(caravan, order_ref, value)
        for order_ref, value in ((not_json, b"\xff{not json"), (invalid, invalid_request(invalid)))
    }
    letters = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(dlq) if r.key in keys], count=2
    )
    assert {r.key: trace_id(r) for r in letters} == keys
    bootstrap = caravan.infra.kafka_bootstrap
    chosen = [d for d in await ops_dlq.read(bootstrap, [dlq]) if d.key in keys]
    await ops_dlq.redrive(bootstrap, caravan.infra.database_url, chosen)
    redriven = await caravan.wait_for(
        lambda: [
            r
            for r in caravan.log.raw(Topic.ORDER_REQUESTS.value)
            if r.key in keys and "caravan.redriven-from" in dict(r.headers)
        ],
        count=2,
    )
    assert {r.key: trace_id(r) for r in redriven} == keys


class _Collector(ThreadingHTTPServer):
    """Stands for an OpenTelemetry collector: keeps each OTLP request's path and body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        super().__init__(("127.0.0.1", free_port()), _CollectorHandler)


class _CollectorHandler(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


async def test_spans_go_to_a_collector_that_the_standard_variables_name(caravan: System) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT (with OTEL_TRACES_EXPORTER=otlp) sends a placed order's
    spans over OTLP (HTTP, protobuf) to a collector: both were ignored, spans only written to
    CARAVAN_TRACE_DIR's files."""
    collector = _Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        await caravan.restart(
            ("orders",), OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_TRACES_EXPORTER="otlp"
        )
        req = order()
        await caravan.request(req)
        await caravan.placed(req.order_ref)

        def received() -> set[tuple[str, str]]:
            """(service.name, span name) of each span the collector was sent."""
            spans = set()
            for path, body in list(collector.received):
                assert path == "/v1/traces", path
                for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                    named = {a.key: a.value.string_value for a in resource.resource.attributes}
                    for scope in resource.scope_spans:
                        spans |= {(named["service.name"], span.name) for span in scope.spans}
            return spans

        placing = ("caravan-orders", "orders.requests.v1 process")
        await caravan.wait_for(lambda: [s for s in received() if s == placing])
    finally:
        await caravan.restart(("orders",))
        collector.shutdown()
        collector.server_close()

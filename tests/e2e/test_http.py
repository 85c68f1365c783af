"""The storefront HTTP API of the orders service, against the running system."""

import asyncio
import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from functools import partial

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import SERVICES
from services.orders import handlers
from services.orders.bootstrap import bootstrap as orders
from services.orders.entrypoints.subscribers import subscriptions
from shared.events.envelope import new_event
from shared.events.orders import OrderRequested
from shared.http import PROBLEM
from shared.settings import Settings
from shared.topics import Topic
from tests.harness import System, ref
from tests.unit.test_field_errors import ORDER_REF, PHONE

BODY = {
    "buyer": {"id": "t-rich", "phone": "+8613900000001", "locale": "en"},
    "lines": [{"sku": "T-PEPPER", "quantity": 1}],
    "payment": {"method": "prepaid"},
    "delivery": {"county": "Shawan", "address": "Village 3"},
}


async def test_post_then_get_follows_the_order_to_its_outcome(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP")
    first = await http.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    order_id = first.json()["order_id"]
    again = await http.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["order_id"] == order_id
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.confirmed"
    body = (await http.get(f"/orders/{order_id}")).json()
    assert body["order_ref"] == key and body["status"] == "confirmed"
    # Whose order, and from where: a platform order's buyer was found through no API.
    assert (body["buyer_id"], body["source"]) == (BODY["buyer"]["id"], "http")  # type: ignore[index]
    # Where to send the goods is kept and told (it was taken, then dropped unseen).
    assert body["delivery"] == BODY["delivery"]
    placed = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_id=order_id)
    assert placed[0].data["delivery"] == BODY["delivery"]
    # The timeline's times follow its order.
    times = [step["time"] for step in body["timeline"]]
    assert times == sorted(times), body["timeline"]
    # The id in upper case is the same order (it was 404 "no order"), here and at payments.
    upper = await http.get(f"/orders/{order_id.upper()}")
    assert upper.status_code == 200 and upper.json() == body
    async with caravan.api("payments") as payments:
        paid = await payments.get(f"/orders/{order_id.upper()}/payment")
    assert paid.status_code == 200 and paid.json()["order_id"] == order_id


async def test_same_key_with_another_body_is_refused(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP")
    lines = [{"sku": "T-PEPPER", "quantity": 1}, {"sku": "T-RAISIN", "quantity": 1}]
    body = {**BODY, "lines": lines}
    first = await http.post("/orders", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202
    # The same lines listed in another order: the same order.
    reordered = {**BODY, "lines": lines[::-1]}
    again = await http.post("/orders", json=reordered, headers={"Idempotency-Key": key})
    assert (again.status_code, again.json()["order_id"]) == (202, first.json()["order_id"])
    other = {**BODY, "lines": [{"sku": "T-PEPPER", "quantity": 2}]}
    refused = await http.post("/orders", json=other, headers={"Idempotency-Key": key})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")


def orders_said(caravan: System, since: int, start: str) -> list[str]:
    """The messages of the orders service's log lines written past ``since`` (a size of its
    file) that start with ``start``."""
    written = (caravan.procs.log_dir / "orders.log").read_bytes()[since:].splitlines()
    messages = [json.loads(line)["message"] for line in written if line.startswith(b"{")]
    return [m for m in messages if m.startswith(start)]


async def test_a_post_names_what_its_body_held_that_caravan_ignored(caravan: System) -> None:
    """A drill's storefront sent ``"delivry"``: 202, its order confirmed with no address,
    nothing said; ``term_months`` of a prepaid payment went unread as silently. Unknown fields
    are still taken (the contract ignores them), and the 202 names them, at any depth, and a
    field meaning nothing for what was sent; operations get a warning (the same fields from the
    same token once a minute at most) and a count of every request."""
    http = caravan.client
    since = (caravan.procs.log_dir / "orders.log").stat().st_size

    def counted(field: str) -> Awaitable[float]:
        return caravan.gauge("orders", "caravan_orders_ignored_fields_total", field=field)

    before = await counted("unknown"), await counted("payment.term_months")
    clean = await http.post("/orders", json=BODY, headers={"Idempotency-Key": ref("IGN")})
    assert (clean.status_code, clean.json()["ignored"]) == (202, []), clean.text
    address = BODY["delivery"]
    misspelt = {**{k: v for k, v in BODY.items() if k != "delivery"}, "delivry": address}
    key = ref("IGN")
    sent = await http.post("/orders", json=misspelt, headers={"Idempotency-Key": key})
    assert (sent.status_code, sent.json()["ignored"]) == (202, ["delivry"]), sent.text
    order_id = sent.json()["order_id"]
    again = await http.post("/orders", json=misspelt, headers={"Idempotency-Key": key})
    assert (again.status_code, again.json()) == (
        202,
        {"order_id": order_id, "status": again.json()["status"], "ignored": ["delivry"]},
    )
    assert (await http.get(f"/orders/{order_id}")).json()["delivery"] is None
    nested = {
        **BODY,
        "buyer": {**BODY["buyer"], "nick": "A-li"},  # type: ignore[dict-item]
        "lines": [{"sku": "T-PEPPER", "quantity": 1, "colour": "crimson"}],
        "payment": {"method": "prepaid", "term_months": 3},
    }
    deep_key = ref("IGN")
    deep = await http.post("/orders", json=nested, headers={"Idempotency-Key": deep_key})
    assert deep.status_code == 202, deep.text
    assert deep.json()["ignored"] == ["buyer.nick", "lines.0.colour", "payment.term_months"]
    assert (await caravan.outcome(deep.json()["order_id"])).type == "order.confirmed"
    # Once a request (the repeat too), each request once under each field it sent.
    after = await counted("unknown"), await counted("payment.term_months")
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    # The repeat sent the same fields under the same token: said as a retried fault is, once
    # and then at most once a minute (a storefront adding a field to every order would write a
    # line an order); the counter counted it.
    said = await caravan.until(
        lambda: orders_said(caravan, since, "POST /orders "),
        "two warnings",
        ready=lambda found: len(found) >= 2,
    )
    assert [m.split(" of test-session-")[0] for m in said] == [
        f"POST /orders {key}",
        f"POST /orders {deep_key}",
    ], said
    assert said[0].endswith(": ignored delivry (no such field in order.requested)"), said
    assert said[1].endswith(
        ": ignored buyer.nick, lines.0.colour (no such field in order.requested);"
        " payment.term_months (meaning nothing for what was sent)"
    ), said
    assert not [m for m in said if "Village" in m or "A-li" in m or "crimson" in m], said


async def test_a_request_of_source_http_on_the_topic_is_refused_and_takes_no_key(
    caravan: System,
) -> None:
    """``http`` is the source of ``POST /orders``. A publisher of ``orders.requests.v1``
    that named it had its order placed under an HTTP client's Idempotency-Key: the
    client's POST was then a 409 naming that order, or given it back. Now the request is
    refused as a platform's source is, and the key is still the client's."""
    key = ref("HTTP-FORGED")
    forged = OrderRequested.model_validate({**BODY, "order_ref": key})
    await caravan.request(forged, source="http")
    rejected = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected", order_ref=key)
    )
    assert [e["field"] for e in rejected[0].data["errors"]] == ["source"]
    stored = "select count(*) from orders.orders where order_ref = :r"
    assert await caravan.scalar(stored, r=key) == 0
    other = {**BODY, "buyer": {**BODY["buyer"], "id": "t-other"}}  # type: ignore[dict-item]
    mine = await caravan.client.post("/orders", json=other, headers={"Idempotency-Key": key})
    assert mine.status_code == 202, mine.text


async def test_a_platform_s_or_http_s_source_in_another_case_is_refused_on_the_topic_too(
    caravan: System,
) -> None:
    """The refusal of a platform's source and of ``http`` on ``orders.requests.v1`` compared
    them as written: ``Platform/taobao`` and ``HTTP`` were placed, a platform's order or the
    API's to whoever reads the source. Each case of them is refused now; a request whose
    order exists (placed so before this) changes nothing when it comes again (a replay)."""
    said = {
        "Platform/taobao": "a marketplace platform's orders are placed by its adapter only",
        "PLATFORM/taobao": "a marketplace platform's orders are placed by its adapter only",
        "HTTP": "the orders of source http are placed by POST /orders only",
        "Http": "the orders of source http are placed by POST /orders only",
    }
    sent = {}
    for source in said:
        sent[source] = forged = OrderRequested.model_validate({**BODY, "order_ref": ref("CASE")})
        await caravan.request(forged, source=source)
    for source, forged in sent.items():
        [rejected] = await caravan.wait_for(
            partial(
                caravan.log.events,
                Topic.ORDER_EVENTS,
                type="order.rejected",
                order_ref=forged.order_ref,
            )
        )
        assert rejected.data["source"] == source
        assert rejected.data["errors"] == [{"field": "source", "message": said[source]}]
    refs = [forged.order_ref for forged in sent.values()]
    stored = "select count(*) from orders.orders where order_ref = any(:r)"
    assert await caravan.scalar(stored, r=refs) == 0
    # An order placed under such a source before it was refused (made so here: placed as a
    # storefront's, then given the source), and the request that placed it replayed.
    placed = OrderRequested.model_validate({**BODY, "order_ref": ref("CASE-OLD")})
    old = f"Platform/old-{uuid.uuid4().hex[:6]}"
    await caravan.request(placed)
    order_id = await caravan.placed(placed.order_ref)
    await caravan.execute(
        "update orders.orders set source = :s where order_id = :o", s=old, o=order_id
    )
    again = new_event(placed, source=old)
    record = await caravan.publish_raw(
        Topic.ORDER_REQUESTS.value, again.to_json(), placed.order_ref.encode()
    )
    await caravan.consumed("orders", record)  # handled: a rejection of it is written by now
    rejections = ("orders", Topic.ORDER_EVENTS, "order.rejected")
    assert await caravan.outbox_count(*rejections, order_ref=placed.order_ref) == 0
    # Given back its source: the storefront's request that placed it stays on the topic, and
    # a replay of orders' group later in the session (test_ops) reads it again, as a request
    # under an id handled before whose order is gone, answered order.rejected (CI, once).
    await caravan.execute(
        "update orders.orders set source = :s where order_id = :o", s="storefront/test", o=order_id
    )


async def test_concurrent_posts_with_one_key_place_one_order(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP-RACE")
    answers = await asyncio.gather(
        *(http.post("/orders", json=BODY, headers={"Idempotency-Key": key}) for _ in range(8))
    )
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers]
    (order_id,) = {a.json()["order_id"] for a in answers}
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    stored = "select count(*) from orders.orders where order_ref = :r"
    assert await caravan.scalar(stored, r=key) == 1
    assert len(caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=key)) == 1


async def test_placing_that_violates_another_key_is_a_500_not_a_race_to_send_again(
    caravan: System, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A key other than the order's (source, order_ref) violated at commit (a bug: here an
    order id that is taken) is a 500, logged with its traceback. It was placed again as a
    race lost, then answered 409 "send it again", which a client would do for ever."""
    first = await caravan.client.post(
        "/orders", json=BODY, headers={"Idempotency-Key": ref("HTTP")}
    )
    monkeypatch.setattr(handlers, "new_id", lambda: first.json()["order_id"])
    service = orders(Settings(DATABASE_URL=caravan.infra.database_url))  # in this process
    key = ref("HTTP-BUG")
    try:
        transport = httpx.ASGITransport(app=service.asgi_app)
        token = {"Authorization": f"Bearer {caravan.token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://o", headers=token) as c:
            with caplog.at_level(logging.ERROR, logger="shared.http"):
                answer = await c.post("/orders", json=BODY, headers={"Idempotency-Key": key})
    finally:
        await service.db.dispose()
    assert answer.status_code == 500, answer.text
    (failed,) = [r for r in caplog.records if r.name == "shared.http"]
    assert failed.exc_info is not None
    assert "placing an order violated orders_pkey" in str(failed.exc_info[1])
    stored = "select count(*) from orders.orders where order_ref = :r"
    assert await caravan.scalar(stored, r=key) == 0


async def test_bad_input_gets_422_problem_and_creates_nothing(caravan: System) -> None:
    http = caravan.client
    key = ref("HTTP")
    bad = {**BODY, "lines": [], "payment": {"method": "microloan"}}
    response = await http.post("/orders", json=bad, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert "lines" in fields
    missing_key = await http.post("/orders", json=BODY)
    assert missing_key.status_code == 422
    not_json = await http.post(
        "/orders",
        content=b'{"buyer": ',
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    assert not_json.headers["content-type"].startswith("application/problem+json")
    assert not_json.json()["errors"] == [
        {"field": "body", "message": "not JSON: Expecting value at character 10"}
    ]
    assert not_json.json()["detail"] == "the body is not JSON (UTF-8)"  # not "its schema"
    # JSON sent as another type (a browser's fetch with a string body) says what to send.
    as_text = await http.post(
        "/orders",
        content=json.dumps(BODY).encode(),
        headers={"Idempotency-Key": key, "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert (as_text.status_code, as_text.json()["errors"]) == (
        422,
        [
            {
                "field": "body",
                "message": "the body is text/plain;charset=UTF-8:"
                " send Content-Type: application/json",
            }
        ],
    )
    # A pattern of the contract is said in words, not as its regex (the same words as in an
    # order.rejected: tests/unit/test_field_errors.py).
    bad_phone = {**BODY, "buyer": {"id": "t-rich", "phone": "13900000001", "locale": "en"}}
    worded = await http.post("/orders", json=bad_phone, headers={"Idempotency-Key": key})
    assert (worded.status_code, worded.json()["errors"]) == (
        422,
        [{"field": "buyer.phone", "message": PHONE}],
    )
    bad_key = await http.post("/orders", json=BODY, headers={"Idempotency-Key": "SWN 1"})
    assert (bad_key.status_code, bad_key.json()["errors"]) == (
        422,
        [{"field": "header.idempotency-key", "message": ORDER_REF}],
    )
    assert (
        await caravan.scalar("select count(*) from orders.orders where order_ref = :r", r=key) == 0
    )


async def test_a_body_not_in_utf8_or_nested_past_reading_is_422_and_creates_nothing(
    caravan: System,
) -> None:
    """An order in GBK (Chinese text as a county storefront may well send it) and a body
    nested 10,000 deep were FastAPI's 400 "There was an error parsing the body", with no
    errors, where the contract says 422 with a problem body (shared.http.unreadable_body)."""
    key = ref("HTTP-GBK")
    phone = f"+86139{uuid.uuid4().int % 10**8:08d}"
    buyer = {"id": ref("t-gbk"), "phone": phone, "locale": "zh-CN"}
    order = {**BODY, "buyer": buyer, "delivery": {"county": "沙湾", "address": "三道河子镇三村"}}
    sent = json.dumps(order, ensure_ascii=False)
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    gbk = await caravan.client.post("/orders", content=sent.encode("gbk"), headers=headers)
    assert (gbk.status_code, gbk.headers["content-type"]) == (422, PROBLEM), gbk.text
    [error] = gbk.json()["errors"]
    assert error["field"] == "body" and error["message"].startswith("not UTF-8: "), error
    stored = "select count(*) from orders.orders where order_ref = :r"
    assert await caravan.scalar(stored, r=key) == 0
    deep = b"[" * 10_000 + b"]" * 10_000
    for service, path in [("orders", "/orders"), ("inventory", "/lots")]:
        async with caravan.api(service) as http:
            answer = await http.post(path, content=deep, headers=headers)
        assert (service, answer.status_code, answer.headers["content-type"]) == (
            service,
            422,
            PROBLEM,
        ), answer.text
        assert answer.json()["errors"] == [
            {"field": "body", "message": "not JSON this API reads: nested too deep"}
        ]
    # The same order in UTF-8 is taken, its Chinese address as sent.
    utf8 = await caravan.client.post("/orders", content=sent.encode(), headers=headers)
    assert utf8.status_code == 202, utf8.text
    placed = await caravan.client.get(f"/orders/{utf8.json()['order_id']}")
    assert placed.json()["delivery"] == order["delivery"]


async def test_a_body_sent_with_no_content_type_is_read_as_json(caravan: System) -> None:
    """Python's requests with ``data=`` sends no Content-Type: the order was refused
    (FastAPI's strict default left the body unread)."""
    sent = json.dumps(BODY).encode()
    answer = await caravan.client.post(
        "/orders", content=sent, headers={"Idempotency-Key": ref("HTTP")}
    )
    assert (answer.status_code, "content-type" in answer.request.headers) == (202, False), (
        answer.text
    )
    assert (await caravan.outcome(answer.json()["order_id"])).type == "order.confirmed"


async def test_unknown_order_is_404_and_health_and_metrics_answer(caravan: System) -> None:
    http = caravan.client
    missing = await http.get("/orders/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    # Every service says the database and Kafka are fine, and nothing stalled, without a
    # token.
    ok = {"database": "ok", "kafka": "ok", "consumer": "ok", "relay": "ok"}
    for service in SERVICES:
        async with caravan.api(service, token=None) as api:
            health = await api.get("/healthz")
        assert (service, health.status_code, health.json()) == (
            service,
            200,
            {"status": "ok", "checks": ok},
        )
    metrics = await http.get("/metrics")
    assert "caravan_records_consumed_total" in metrics.text
    # The Prometheus text format, as the contract says (what a scraper parses).
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE caravan_records_consumed_total counter" in metrics.text


async def test_metrics_report_the_consumer_lag_of_every_topic_sample_after_sample(
    caravan: System,
) -> None:
    # The lag is sampled every 5 s through one group client, kept open between samples.
    log = caravan.procs.log_dir / "orders.log"
    logged_before = log.stat().st_size
    http = caravan.client
    placed = await http.post("/orders", json=BODY, headers={"Idempotency-Key": ref("HTTP")})
    assert (await caravan.outcome(placed.json()["order_id"])).type == "order.confirmed"
    # Two samples at least: the gauge saying when both loops (the lag's, the database's)
    # last ended a round with no failure passes a moment, then the moment it did so.

    def observed_at() -> Awaitable[float]:
        return caravan.gauge("orders", "caravan_observed_at_seconds", service="orders")

    first = time.time()
    await caravan.until(observed_at, "a sample", 15, 0.2, ready=lambda at: at > first)
    second = time.time()
    await caravan.until(observed_at, "a second sample", 15, 0.2, ready=lambda at: at > second)
    lag: dict[str, float] = {}
    for line in (await http.get("/metrics")).text.splitlines():
        found = re.match(r"caravan_consumer_lag\{(.*)\} (\S+)$", line)
        if found and 'service="orders"' in found.group(1):
            topic = re.search(r'topic="([^"]+)"', found.group(1))
            assert topic is not None
            lag[topic.group(1)] = lag.get(topic.group(1), 0) + float(found.group(2))
    read = {s.topic.value for s in subscriptions(timedelta(minutes=1))}  # what orders reads
    assert set(lag) == read and "orders.requests.v1" in read
    assert all(value >= 0 for value in lag.values())
    observed = re.search(
        r'^caravan_observed_at_seconds\{service="orders"\} (\S+)$',
        (await http.get("/metrics")).text,
        re.MULTILINE,
    )
    assert observed is not None and time.time() - float(observed.group(1)) < 11
    assert b"metrics sample failed" not in log.read_bytes()[logged_before:]


async def test_cancel_answers_409_after_confirmation_and_keeps_an_earlier_reason(
    caravan: System,
) -> None:
    http = caravan.client
    confirmed = await http.post("/orders", json=BODY, headers={"Idempotency-Key": ref("HTTP")})
    order_id = confirmed.json()["order_id"]
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    before = (await http.get(f"/orders/{order_id}")).json()
    refused = await http.post(f"/orders/{order_id}/cancel")
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["order_id"] == order_id
    assert (await http.get(f"/orders/{order_id}")).json() == before

    unknown = {**BODY, "lines": [{"sku": "ORD-NO-SUCH-SKU", "quantity": 1}]}
    rejected = await http.post("/orders", json=unknown, headers={"Idempotency-Key": ref("HTTP")})
    rejected_id = rejected.json()["order_id"]
    assert (await caravan.outcome(rejected_id)).data["reason"] == "unknown_sku"
    again = await http.post(f"/orders/{rejected_id}/cancel")
    assert again.status_code == 200
    assert (again.json()["status"], again.json()["reason"]) == ("cancelled", "unknown_sku")
    # Its transaction has committed: a second order.cancelled would be in the timeline now.
    assert await caravan.one_terminal(rejected_id) == "order.cancelled"

    for missing in ("00000000-0000-0000-0000-000000000000", "not-an-order"):
        response = await http.post(f"/orders/{missing}/cancel")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_buyers_orders_page_by_cursor_newest_first(caravan: System) -> None:
    http = caravan.client
    buyer_id = ref("ord-list")
    buyer = {**BODY["buyer"], "id": buyer_id}  # type: ignore[dict-item]
    ids = []
    for sku in ["T-PEPPER"] * 4 + ["ORD-NO-SUCH-SKU"]:
        body = {**BODY, "buyer": buyer, "lines": [{"sku": sku, "quantity": 1}]}
        placed = await http.post("/orders", json=body, headers={"Idempotency-Key": ref("HTTP")})
        ids.append(placed.json()["order_id"])
    for order_id in ids:
        await caravan.outcome(order_id)

    seen: list[dict[str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"buyer_id": buyer_id, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/orders", params=params)).json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [o["order_id"] for o in seen] == list(reversed(ids))
    assert [o["placed_at"] for o in seen] == sorted((o["placed_at"] for o in seen), reverse=True)

    cancelled = await http.get("/orders", params={"buyer_id": buyer_id, "status": "cancelled"})
    assert [(o["order_id"], o["reason"]) for o in cancelled.json()["items"]] == [
        (ids[-1], "unknown_sku")
    ]
    confirmed = await http.get("/orders", params={"buyer_id": buyer_id, "status": "confirmed"})
    assert {o["order_id"] for o in confirmed.json()["items"]} == set(ids[:4])

    bad: list[dict[str, str]] = [
        {"buyer_id": buyer_id, "cursor": "garbage"},
        {"buyer_id": buyer_id, "limit": "101"},
        {"buyer_id": buyer_id, "limit": "0"},
        {"buyer_id": buyer_id, "status": "lost"},
    ]
    for params in bad:
        response = await http.get("/orders", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")


def needs_ops(token: str) -> tuple[int, str]:
    """The answer to the token named ``token``, without the scope ops, listing the orders of
    no one buyer: a 403 (it was a 422 naming query.buyer_id, as if the request were at
    fault where the token was)."""
    return (
        403,
        f"the token {token!r} lacks the scope ops, which every buyer's orders need: a token"
        " without it names a buyer (`buyer_id`), or both `source` and `order_ref`",
    )


async def ended_order(caravan: System, buyer_id: str, sku: str, quantity: int = 1) -> str:
    """The id of an order of ``buyer_id`` placed over HTTP, once it has ended."""
    body = {
        **BODY,
        "buyer": {**BODY["buyer"], "id": buyer_id},  # type: ignore[dict-item]
        "lines": [{"sku": sku, "quantity": quantity}],
    }
    placed = await caravan.client.post(
        "/orders", json=body, headers={"Idempotency-Key": ref("OPS")}
    )
    assert placed.status_code == 202, placed.text
    order_id: str = placed.json()["order_id"]
    await caravan.outcome(order_id)
    return order_id


async def test_an_operator_lists_every_buyers_orders_by_status_reason_and_time(
    caravan: System,
) -> None:
    """With the scope ops, GET /orders without buyer_id is every buyer's orders, narrowed by
    status, reason and time placed, paged newest first (it was 422 "buyer_id is needed"); a
    storefront's orders:read still needs a buyer."""
    tag = uuid.uuid4().hex[:6]
    ops = await caravan.issue_token(f"ops-{tag}", "ops")
    storefront_name = f"storefront-{tag}"
    storefront = await caravan.issue_token(storefront_name, "orders:read")
    since = (await caravan.scalar("select now()")).isoformat()
    one, two = f"ops-list-a-{tag}", f"ops-list-b-{tag}"
    ids = [
        await ended_order(caravan, one, "T-PEPPER"),
        await ended_order(caravan, two, "ORD-NO-SUCH-SKU"),
        await ended_order(caravan, one, "T-SCARCE", 6),
        await ended_order(caravan, two, "T-PEPPER"),
        await ended_order(caravan, one, "ORD-NO-SUCH-SKU"),
    ]
    newest_first = list(reversed(ids))

    async with caravan.api("orders", token=ops) as api:

        async def listed(**only: str) -> list[dict[str, str]]:
            seen, cursor, pages = [], None, 0
            while True:
                params = {"since": since, **only, **({"cursor": cursor} if cursor else {})}
                response = await api.get("/orders", params=params)
                assert response.status_code == 200, (only, response.text)
                seen += response.json()["items"]
                pages += 1
                cursor = response.json()["next_cursor"]
                if cursor is None:
                    return seen

        every = await listed(limit="2")
        assert [o["order_id"] for o in every] == newest_first
        assert [o["buyer_id"] for o in every] == [one, two, one, two, one]
        assert [(o["status"], o["reason"]) for o in every] == [
            ("cancelled", "unknown_sku"),
            ("confirmed", None),
            ("cancelled", "out_of_stock"),
            ("cancelled", "unknown_sku"),
            ("confirmed", None),
        ]

        async def found(**only: str) -> list[str]:
            return [o["order_id"] for o in await listed(**only)]

        assert await found(status="cancelled") == [ids[4], ids[2], ids[1]]
        assert await found(status="confirmed") == [ids[3], ids[0]]
        assert await found(reason="out_of_stock") == [ids[2]]
        assert await found(status="cancelled", reason="unknown_sku") == [ids[4], ids[1]]
        assert await found(status="pending") == []
        third = every[2]["placed_at"]  # ids[2]: since takes it, until leaves it out
        assert await found(since=third) == [ids[4], ids[3], ids[2]]
        assert await found(until=third) == [ids[1], ids[0]]
        assert await found(since=third, until=every[1]["placed_at"], status="cancelled") == [ids[2]]
        assert await found(buyer_id=two) == [ids[3], ids[1]]  # a buyer's, with ops alone too

        bad = {
            "query.status": {"status": "lost"},
            "query.reason": {"reason": "lost"},
            "query.since": {"since": "2026-12-05T08:00:00"},  # no zone: whose day?
            "query.until": {"until": "yesterday"},
        }
        for field, params in bad.items():
            response = await api.get("/orders", params=params)
            assert (response.status_code, response.headers["content-type"]) == (422, PROBLEM)
            assert [e["field"] for e in response.json()["errors"]] == [field], response.text
        refused = {
            ("query.since", "must fall between the years 1 and 9999 in UTC"): {
                "since": "0001-01-01T00:00:00+01:00"
            },
            ("query.reason", "only cancelled orders have a reason, not confirmed ones"): {
                "status": "confirmed",
                "reason": "out_of_stock",
            },
            ("query.until", "`until` must be after `since`"): {"since": third, "until": third},
        }
        for (field, said), params in refused.items():
            response = await api.get("/orders", params=params)
            assert response.status_code == 422, response.text
            assert [(e["field"], e["message"]) for e in response.json()["errors"]] == [
                (field, said)
            ]

    async with caravan.api("orders", token=storefront) as api:
        # A storefront serves one buyer: every buyer's orders (totals, reasons) are not its.
        response = await api.get("/orders", params={"since": since})
        answered = (response.status_code, response.json()["detail"])
        assert answered == needs_ops(storefront_name)
        response = await api.get("/orders", params={"since": since, "buyer_id": one})
        assert [o["order_id"] for o in response.json()["items"]] == [ids[4], ids[2], ids[0]]


async def test_a_buyers_orders_are_found_by_source_and_order_ref(caravan: System) -> None:
    """A storefront that published its order on Kafka finds it by its own reference, and
    tells it from another source's order of the same order_ref (the filters were ignored:
    every order of the buyer came back)."""
    http = caravan.client
    buyer = {**BODY["buyer"], "id": ref("ord-find")}  # type: ignore[dict-item]
    key = ref("FIND")
    over_http = await http.post(
        "/orders", json={**BODY, "buyer": buyer}, headers={"Idempotency-Key": key}
    )
    other = await http.post(
        "/orders", json={**BODY, "buyer": buyer}, headers={"Idempotency-Key": ref("FIND")}
    )
    await caravan.request(OrderRequested.model_validate({**BODY, "buyer": buyer, "order_ref": key}))
    on_kafka = await caravan.placed(key)

    async def found(**only: str) -> set[str]:
        response = await http.get("/orders", params={"buyer_id": buyer["id"], **only})
        assert response.status_code == 200, response.text
        return {o["order_id"] for o in response.json()["items"]}

    http_id, other_id = over_http.json()["order_id"], other.json()["order_id"]
    assert await found() == {http_id, other_id, on_kafka}
    assert await found(order_ref=key) == {http_id, on_kafka}
    assert await found(order_ref=key, source="storefront/test") == {on_kafka}
    assert await found(source="http") == {http_id, other_id}
    assert await found(order_ref=key, source="storefront/else") == set()
    # A parameter it does not know narrows nothing, as on every list route (FastAPI's way).
    assert await found(sourse="http") == {http_id, other_id, on_kafka}
    for bad in ({"order_ref": "not a ref"}, {"source": ""}, {"order_ref": "x" * 65}):
        response = await http.get("/orders", params={"buyer_id": buyer["id"], **bad})
        assert response.status_code == 422, bad
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_values_postgresql_cannot_store_get_a_problem_not_a_500(caravan: System) -> None:
    """Text with NUL, numbers beyond their column, bodies nested past any use and cursors
    whose time has no UTC: each API answers 4xx with a problem body, on every service."""
    cursor = base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+01:00", "x"]').decode()  # no UTC
    lot = {
        "lot_id": ref("LOT-BIG"),
        "sku": "T-PEPPER",
        "quantity": 3_000_000_000,
        "available_from": "2026-01-01",
        "best_before": "2099-12-31",
    }
    deep = {**BODY, "buyer": json.loads("[" * 450 + "]" * 450)}
    calls = [
        ("inventory", "POST", "/lots", lot),
        ("payments", "PUT", "/credit-lines/a%00b", {"credit_limit_fen": 1}),
        ("payments", "PUT", "/credit-lines/t-big", {"credit_limit_fen": 2**63}),
        ("orders", "GET", f"/orders?buyer_id=t-rich&cursor={cursor}", None),
        ("orders", "GET", "/orders?buyer_id=a%00b", None),
        ("orders", "POST", "/orders", deep),
    ]
    answers = []
    for service, method, path, body in calls:
        async with caravan.api(service) as http:
            headers = {"Idempotency-Key": ref("DEEP")} if service == "orders" else {}
            answer = await http.request(method, path, json=body, headers=headers)
        answers.append((service, method, path, answer.status_code, answer.headers["content-type"]))
    bad = [a for a in answers if not (400 <= a[3] < 500 and "problem+json" in a[4])]
    assert bad == [], bad


async def test_a_path_id_holding_nul_names_nothing(caravan: System) -> None:
    """Such an id reached PostgreSQL, which cannot store NUL (22021), and a read of the
    inventory, payments or platform API was answered 422 "a value cannot be stored"; the
    orders API answered 404. Every one answers 404 now (shared.http.NO_NUL)."""
    reads = [
        ("orders", "GET", "/orders/a%00b"),
        ("inventory", "GET", "/stock/a%00b"),
        ("inventory", "GET", "/lots/a%00b"),
        ("inventory", "POST", "/lots/a%00b/adjustments"),
        ("payments", "GET", "/credit-lines/a%00b"),
        ("payments", "GET", "/loans/a%00b"),
        ("payments", "GET", "/orders/a%00b/payment"),
        ("platform", "GET", "/platform/a%00b/mappings"),
        ("platform", "GET", "/platform/shop/mappings/sku/a%00b"),
        ("platform", "DELETE", "/platform/shop/mappings/sku/a%00b"),
    ]
    answers = []
    for service, method, path in reads:
        async with caravan.api(service) as http:
            answer = await http.request(method, path, headers={"Idempotency-Key": ref("NUL")})
        answers.append((service, method, path, answer.status_code, answer.headers["content-type"]))
    assert [a for a in answers if a[3:] != (404, PROBLEM)] == [], answers


def _timed(page: str, service: str) -> dict[tuple[str, str, str], float]:
    """``service``'s requests timed in ``caravan_http_request_seconds``, by (method, route,
    status), from its ``/metrics`` page."""
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "caravan_http_request_seconds_count" and s.labels["service"] == service
    }


async def test_requests_are_timed_by_route_template_and_status(caravan: System) -> None:
    """An operator sees how long POST /orders and a GET of an order take to answer, each
    order's under its route's template, a path no route takes under one label, and the
    polls of /healthz and /metrics not at all."""
    http = caravan.client
    before = _timed((await http.get("/metrics")).text, "orders")
    placed = await http.post("/orders", json=BODY, headers={"Idempotency-Key": ref("TIMED")})
    assert placed.status_code == 202, placed.text
    assert (await http.get(f"/orders/{placed.json()['order_id']}")).status_code == 200
    assert (await http.get(f"/orders/{uuid.uuid4()}")).status_code == 404
    assert (await http.get(f"/no/such/{uuid.uuid4()}")).status_code == 404
    assert (await http.request("BREW", "/orders")).status_code == 405
    # Refused by its Content-Length before any route is reached, it is still POST /orders'.
    too_large = b"x" * (Settings().http_max_body_bytes + 1)
    assert (await http.post("/orders", content=too_large)).status_code == 413
    assert (await http.get("/healthz")).status_code == 200
    after = _timed((await http.get("/metrics")).text, "orders")
    counted = {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key)}
    assert counted == {
        ("POST", "/orders", "202"): 1,
        ("GET", "/orders/{order_id}", "200"): 1,
        ("GET", "/orders/{order_id}", "404"): 1,
        ("GET", "unmatched", "404"): 1,
        ("other", "/orders", "405"): 1,
        ("POST", "/orders", "413"): 1,
    }

"""The saga end to end, on real Kafka and real PostgreSQL, with the five services running."""

import contextlib
import uuid
from collections.abc import Awaitable
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from caravan.ops import dlq as ops_dlq
from services.orders.entrypoints.schemas import step_said
from shared import days
from shared.events.envelope import MAX_LOAN_ID, MAX_ORDER_ID, CloudEvent, new_event
from shared.events.orders import Buyer, OrderLine, OrderRequested
from shared.messaging.consumer import (
    HEADERS_DROPPED,
    LETTER_REDRIVEN_FROM,
    REDRIVE_GROUP,
    REDRIVEN_FROM,
)
from shared.seed import SeedFile
from shared.topics import Topic
from tests.e2e.markers import consumed_again, published, read_to_the_end
from tests.e2e.test_ops import cli
from tests.harness import System, raw_event, ref
from tests.unit.test_field_errors import BAD_REQUESTS

GROUP = "dlq.group"
RICH = Buyer(id="t-rich", phone="+8613900000001", locale="en")
POOR = Buyer(id="t-poor", phone="+8613900000002", locale="ug-CN")
ZH = Buyer(id="t-zh", phone="+8613900000003", locale="zh-CN")


def buyer_sms(caravan: System, order_id: str, buyer: Buyer) -> list[CloudEvent]:
    """The ``sms.sent`` events of an order addressed to its buyer."""
    return caravan.log.events(
        Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id, to=buyer.phone
    )


async def one_text(caravan: System, order_id: str, buyer: Buyer) -> CloudEvent:
    """The buyer's only ``sms.sent`` about the order. Once it is out, another order of the
    same buyer is placed and its text waited for: queued after this one's was sent, it goes
    out after anything queued with this one, so a second text of this order would be out
    by then."""
    await caravan.wait_for(lambda: buyer_sms(caravan, order_id, buyer))
    later = order(buyer, {"T-PEPPER": 1})
    await caravan.request(later)
    later_id = await caravan.placed(later.order_ref)
    await caravan.wait_for(lambda: buyer_sms(caravan, later_id, buyer))
    sms = buyer_sms(caravan, order_id, buyer)
    assert len(sms) == 1, sms
    return sms[0]


def records_of(caravan: System, topic: Topic, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The key and data of each record on ``topic`` about the order (records not JSON, or no
    CloudEvent, which some tests write, are none of its: the reliability run's poison
    ``{"hello": "world"}`` on orders.events.v1 failed a saga test run after it with KeyError)."""
    found = []
    for record in caravan.log.raw(topic.value):
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError, KeyError):
            data = orjson.loads(record.value)["data"]
            if data.get("order_id") == order_id:
                found.append((record.key.decode(), data))
    return found


def order(
    buyer: Buyer = RICH,
    lines: dict[str, int] | None = None,
    method: str = "prepaid",
    term: int | None = None,
) -> OrderRequested:
    return OrderRequested.model_validate(
        {
            "order_ref": ref(),
            "buyer": buyer.model_dump(),
            "lines": [{"sku": s, "quantity": q} for s, q in (lines or {"T-PEPPER": 2}).items()],
            "payment": {"method": method, "term_months": term},
        }
    )


async def test_prepaid_order_is_confirmed_and_the_buyer_gets_one_sms(caravan: System) -> None:
    req = order(RICH, {"T-PEPPER": 2, "T-RAISIN": 1})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.confirmed"
    assert outcome.data["total_fen"] == 2 * 3500 + 2800
    assert outcome.data["payment"] == {"method": "prepaid"}
    assert outcome.data["source"] == "storefront/test"  # order_ref is unique per source only
    assert outcome.correlationid == order_id
    sms = await one_text(caravan, order_id, RICH)
    assert sms.data["to"] == RICH.phone
    # English, to a mainland number: signed 【Caravan】 as Chinese carriers require, so UCS-2.
    assert sms.data["locale"] == "en" and sms.data["encoding"] == "UCS-2"
    assert sms.data["text"].startswith("【Caravan】Your order ")
    # Keyed as the contract says: the order's events by its id, texts by the number texted.
    events = records_of(caravan, Topic.ORDER_EVENTS, order_id)
    assert len(events) >= 2 and {key for key, _ in events} == {order_id}, events
    texts = records_of(caravan, Topic.NOTIFICATION_EVENTS, order_id)
    assert texts and all(key == data["to"] for key, data in texts), texts
    # Inventory marks the reservation sold when it reads order.confirmed, in its own time.
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.sold", order_id=order_id)
    )
    assert (
        await caravan.scalar(
            "select status from inventory.reservations where order_id = :o", o=order_id
        )
        == "sold"
    )
    body = (await caravan.client.get(f"/orders/{order_id}")).json()
    assert body["status"] == "confirmed" and body["total_fen"] == 9800
    steps = [s["type"] for s in body["timeline"]]
    assert steps[0] == "order.placed" and "order.confirmed" in steps


async def test_microloan_order_is_confirmed_with_a_loan(caravan: System) -> None:
    req = order(ZH, {"T-HONEY": 3}, method="microloan", term=3)
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.confirmed"
    loan_id = outcome.data["payment"]["loan_id"]
    assert loan_id
    loan = (
        await caravan.sql(
            "select principal_fen, outstanding_fen, status, term_months"
            " from payments.loans where loan_id = :l",
            l=loan_id,
        )
    )[0]
    assert tuple(loan) == (27000, 27000, "active", 3)
    total = await caravan.scalar(
        "select sum(amount_fen) from payments.instalments where loan_id = :l", l=loan_id
    )
    assert total == 27000
    # The confirmation carries the schedule, and the buyer's SMS tells the first instalment.
    schedule = outcome.data["payment"]["schedule"]
    assert [i["amount_fen"] for i in schedule] == [9000, 9000, 9000]
    first = date.fromisoformat(schedule[0]["due"])
    sms = await caravan.wait_for(lambda: buyer_sms(caravan, order_id, ZH))
    assert sms[0].data["locale"] == "zh-CN" and sms[0].data["encoding"] == "UCS-2"
    assert f"分3期按月还款，首期¥90.00于{first.month}月{first.day}日到期" in sms[0].data["text"]


async def test_out_of_stock_cancels_with_no_loan_and_no_charge(caravan: System) -> None:
    req = order(RICH, {"T-SCARCE": 6}, method="microloan", term=2)
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert outcome.type == "order.cancelled"
    assert (outcome.data["reason"], outcome.data["source"]) == ("out_of_stock", "storefront/test")
    assert (
        await caravan.scalar("select count(*) from payments.loans where order_id = :o", o=order_id)
        == 0
    )
    assert await caravan.scalar(
        "select coalesce(string_agg(status, ','), 'none')"
        " from payments.payments where order_id = :o",
        o=order_id,
    ) in ("none", "cancelled")
    assert (
        await caravan.scalar("select available from inventory.lots where lot_id = 'T-SCR-1'") == 5
    )


async def test_out_of_season_is_told_apart(caravan: System) -> None:
    req = order(RICH, {"T-FIG": 1})
    await caravan.request(req)
    outcome = await caravan.outcome(await caravan.placed(req.order_ref))
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "out_of_season")


WALNUT_NAMES = {
    "zh-CN": "测试核桃 1公斤",
    "ug-CN": "سىناق ياڭاق 1 كىلوگرام",
    "en": "Test walnuts 1 kg",
}


async def test_an_order_cancelled_for_a_product_names_it_to_the_storefront_and_the_buyer(
    caravan: System,
) -> None:
    """Raisins in stock, walnuts out of season: the order is cancelled ``out_of_season``, and
    inventory's ``stock.rejected`` named the walnuts, but neither the order's view (nor its
    timeline), nor ``order.cancelled``, nor the buyer's text said which product it was: a
    storefront could not tell its buyer what to take out of the basket."""
    walnut = f"T-WALNUT-{uuid.uuid4().hex[:8]}"
    today = days.today()
    await caravan.seed(
        SeedFile.model_validate(
            {
                "products": [
                    {
                        "sku": walnut,
                        "seller_id": "t-seller-1",
                        "unit_price_fen": 4200,
                        "name": WALNUT_NAMES,
                    }
                ],
                "lots": [
                    {
                        "lot_id": f"{walnut}-1",
                        "sku": walnut,
                        "quantity": 100,
                        "available_from": str(today - timedelta(days=400)),
                        "best_before": str(today - timedelta(days=30)),
                    }
                ],
            }
        )
    )
    req = order(ZH, {"T-RAISIN": 2, walnut: 1})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "out_of_season")
    assert outcome.data["skus"] == [walnut]
    body = (await caravan.client.get(f"/orders/{order_id}")).json()
    assert (body["status"], body["reason"], body["skus"]) == (
        "cancelled",
        "out_of_season",
        [walnut],
    )
    [cancelled] = [s for s in body["timeline"] if s["type"] == "order.cancelled"]
    assert cancelled["skus"] == [walnut]
    assert step_said(cancelled) == f"order.cancelled: for SKU {walnut}"
    assert all(s["skus"] is None for s in body["timeline"] if s is not cancelled)
    listed = await caravan.client.get(
        "/orders", params={"buyer_id": ZH.id, "order_ref": req.order_ref}
    )
    assert [o["skus"] for o in listed.json()["items"]] == [[walnut]]
    # The buyer's text names it, in the buyer's language (zh-CN), as the seed names it.
    sms = await one_text(caravan, order_id, ZH)
    assert sms.data["text"] == (
        f"【Caravan】您的订单{req.order_ref}已取消，原因：商品已过季（测试核桃 1公斤）。"
        "给您带来不便，敬请谅解。"
    )
    assert (sms.data["encoding"], sms.data["segments"]) == ("UCS-2", 1)


async def test_credit_declined_releases_the_stock(caravan: System) -> None:
    before = await caravan.scalar("select available from inventory.lots where lot_id = 'T-HNY-1'")
    req = order(POOR, {"T-HONEY": 1}, method="microloan", term=6)  # 9000 fen > 5000 limit
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "credit_declined")
    assert "skus" not in outcome.data  # not a product's reason
    assert (await caravan.client.get(f"/orders/{order_id}")).json()["skus"] is None
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id)
    )
    after = await caravan.scalar("select available from inventory.lots where lot_id = 'T-HNY-1'")
    assert after == before
    assert (
        await caravan.scalar(
            "select status from inventory.reservations where order_id = :o", o=order_id
        )
        == "released"
    )
    assert (
        await caravan.scalar("select count(*) from payments.loans where order_id = :o", o=order_id)
        == 0
    )
    sms = await caravan.wait_for(lambda: buyer_sms(caravan, order_id, POOR))
    assert sms[0].data["locale"] == "ug-CN"


async def test_the_same_request_three_times_makes_one_order(caravan: System) -> None:
    req = order(RICH, {"T-PEPPER": 1})
    event = new_event(req, source="storefront/test")
    for _ in range(3):
        await caravan.request(req, event=event)
    again = new_event(req, source="storefront/test")  # a new event id, the same idempotency key
    await caravan.request(req, event=again)
    order_id = await caravan.placed(req.order_ref)
    await caravan.outcome(order_id)
    # The new-id copy, published last on the key's partition, handled (not dead-lettered):
    # the copies before it were consumed as well.
    await caravan.handled("orders", again)
    assert (
        await caravan.scalar(
            "select count(*) from orders.orders where order_ref = :r", r=req.order_ref
        )
        == 1
    )
    placed = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=req.order_ref)
    assert len(placed) == 1
    assert await caravan.one_terminal(order_id) == "order.confirmed"
    # The text is sent on notifications' own time.
    await one_text(caravan, order_id, RICH)


async def test_another_request_under_an_id_used_before_is_rejected_not_lost(
    caravan: System,
) -> None:
    """A storefront's second order sent under its first one's event id (an id copied from a
    template, a counter started again) was dropped by orders' inbox as a repeat of the
    first: no order, no answer, no dead letter, no line in a log. It is refused as invalid
    data is: dead-lettered, answered ``order.rejected`` naming ``id``, the first order left
    as it was; the first request again under that id (a producer's retry) stays silent."""
    first = order(RICH, {"T-PEPPER": 1})
    event = new_event(first, source="storefront/test")
    second = order(RICH, {"T-PEPPER": 2})
    reused = new_event(second, source="storefront/test").model_copy(update={"id": event.id})
    await caravan.request(first, event=event)  # likely one batch with the next: both paths
    await caravan.request(second, event=reused)
    order_id = await caravan.placed(first.order_ref)
    said = (
        "storefront/test sent another request under this id before; this one was not"
        " applied: give each request an id of its own"
    )
    answers = await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.ORDER_EVENTS, type="order.rejected", order_ref=second.order_ref
        )
    )
    assert [(a.data["errors"], a.causationid) for a in answers] == [
        ([{"field": "id", "message": said}], event.id)
    ]
    key = second.order_ref.encode()
    letters = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key]
    )
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert (headers["dlq.error"], headers["dlq.error.message"]) == ("invalid_data", f"id: {said}")
    # The first again: a repeat, said nothing. Sent as itself: consumed_again finds a record by
    # its event id, which the second shares, and could send the second again (rejected again:
    # a CI of 2026-12-07 counted two rejections).
    key = first.order_ref.encode()
    again = await caravan.publish_raw(Topic.ORDER_REQUESTS.value, event.to_json(), key)
    await caravan.consumed("orders", again)
    await published(caravan, "orders", first.order_ref, Topic.ORDER_EVENTS)
    rejected = caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected")
    assert [r.data["order_ref"] for r in rejected if r.causationid == event.id] == [
        second.order_ref
    ]
    placed = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=second.order_ref)
    assert placed == []
    assert await caravan.one_terminal(order_id) == "order.confirmed"


async def test_a_request_on_the_topic_holding_fields_caravan_ignored_is_said_to_operations(
    caravan: System,
) -> None:
    """No answer carries what an ``order.requested`` held that Caravan ignored (unknown
    fields, a prepaid payment's term_months), as POST /orders's 202 does: the orders log
    says it, a warning naming the fields and never what they held (the same fields from the
    same source once a minute at most), and a counter counts every request; a clean request
    says nothing."""
    since = (caravan.procs.log_dir / "orders.log").stat().st_size

    def counted(field: str) -> Awaitable[float]:
        return caravan.gauge("orders", "caravan_orders_ignored_fields_total", field=field)

    before = await counted("unknown"), await counted("payment.term_months")
    clean, sloppy = order(RICH, {"T-PEPPER": 1}), order(RICH, {"T-PEPPER": 1})
    await caravan.request(clean)
    sent = orjson.loads(new_event(sloppy, source="storefront/test").to_json())
    sent["data"]["lines"][0]["colour"] = "crimson"
    sent["data"]["payment"]["term_months"] = 3
    sent["data"]["delivry"] = {"county": "Shawan", "address": "Village 3"}
    key = sloppy.order_ref.encode()
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, orjson.dumps(sent), key)
    # The same request under another event id: a request again, said again.
    again = {**sent, "id": str(uuid.uuid4())}
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, orjson.dumps(again), key)
    order_id = await caravan.placed(sloppy.order_ref)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    await caravan.placed(clean.order_ref)  # said, were it, once its transaction committed

    def said() -> list[str]:
        written = (caravan.procs.log_dir / "orders.log").read_bytes()[since:].splitlines()
        messages = [orjson.loads(line)["message"] for line in written if line.startswith(b"{")]
        return [m for m in messages if m.startswith("order.requested storefront/test/")]

    # Counted twice; said once: the same fields from the same source again within a minute
    # are held, as a retried fault's warnings are.
    async def both() -> tuple[float, float]:
        return await counted("unknown"), await counted("payment.term_months")

    after = await caravan.until(
        both,
        "both requests counted",
        ready=lambda now: (now[0] - before[0], now[1] - before[1]) == (2, 2),
    )
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)
    lines = await caravan.until(said, "the warning", ready=lambda found: len(found) >= 1)
    assert lines == [
        f"order.requested storefront/test/{sloppy.order_ref}: ignored lines.0.colour, delivry"
        " (no such field in order.requested); payment.term_months (meaning nothing for what"
        " was sent)"
    ]


async def test_an_order_ref_reused_with_other_content_is_rejected_and_dead_lettered(
    caravan: System, tmp_path: Path
) -> None:
    """The (source, order_ref) of a placed order with another body (9 peppers, not 2)
    changes nothing, and is answered as invalid data is: an ``order.rejected`` naming the
    order, and a dead letter ``order_ref_reused``, once per record (it was ignored with a
    line in the log). The first body again, under a new event id, stays silent; a redrive of
    the letter places nothing and comes back as one letter more, not round and round."""
    req = order(RICH, {"T-PEPPER": 2})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    other = req.model_copy(update={"lines": [OrderLine(sku="T-PEPPER", quantity=9)]})
    conflicting = new_event(other, source="storefront/test")
    key = req.order_ref.encode()
    counted = partial(
        caravan.gauge,
        "orders",
        "caravan_dead_letters_total",
        error="order_ref_reused",
        service="orders",
        topic=Topic.ORDER_REQUESTS.value,
    )
    counted_before = await counted()
    for _ in range(2):  # the same record twice (a producer's retry): two records
        await caravan.publish_raw(Topic.ORDER_REQUESTS.value, conflicting.to_json(), key)
    duplicate = await caravan.request(req)  # the first body again: a plain duplicate

    def rejected() -> list[CloudEvent]:
        return caravan.log.events(
            Topic.ORDER_EVENTS, type="order.rejected", order_ref=req.order_ref
        )

    def letters() -> list[Any]:
        return [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key]

    async def quiet() -> None:
        """Orders has handled every request before now on their partition (a copy of the
        duplicate sent after them, which its inbox drops), its answers are published and the
        letters it sent are read."""
        await consumed_again(caravan, "orders", duplicate)
        await published(caravan, "orders", req.order_ref, Topic.ORDER_EVENTS)
        await read_to_the_end(caravan, Topic.ORDER_REQUESTS.dlq)

    said = (
        f"storefront/test/{req.order_ref} already names order {order_id} with other content;"
        " that order stands and this request was not applied"
    )
    answers = await caravan.wait_for(rejected, count=2)
    # One request, however often delivered: one answer, by (source, id), as readers dedupe.
    assert len({(answer.source, answer.id) for answer in answers}) == 1
    for answer in answers:
        assert answer.data["errors"] == [{"field": "order_ref", "message": said}]
        assert (answer.data["source"], answer.causationid) == ("storefront/test", conflicting.id)
        assert answer.data["order_id"] == order_id  # the order that stands
    for letter in await caravan.wait_for(letters, count=2):
        headers = {k: v.decode() for k, v in letter.headers}
        assert (headers["dlq.error"], headers["dlq.error.message"]) == ("order_ref_reused", said)
        assert letter.value == conflicting.to_json()
    await quiet()
    assert (len(rejected()), len(letters()), await counted()) == (2, 2, counted_before + 2)

    letter = next(d for d in await ops_dlq.read(caravan.infra.kafka_bootstrap) if d.key == key)
    mended = tmp_path / "mended.json"  # another order_ref: only so is it placed
    renamed = other.model_copy(update={"order_ref": ref("NEW")})
    mended.write_bytes(new_event(renamed, source="storefront/test").to_json())
    dry = await cli(caravan, "dlq", "redrive", letter.ref, "--value-file", str(mended), "--dry-run")
    assert [line for line in dry.stdout.splitlines() if "warning" in line] == [
        f"warning: {letter.ref}, the request storefront/test/{req.order_ref}, was answered"
        " order.rejected: its order_ref names another order, which stands: it is never placed"
        " under it; the value sent is placed only if it names another order_ref (its source"
        " then sees order.placed and the order's outcome for that one), else it is"
        " dead-lettered again and answered order.rejected again, unless it holds what that"
        " order was placed with (a copy of its request: nothing placed, published or"
        " dead-lettered)"
    ], dry.stdout
    done = await cli(caravan, "dlq", "redrive", letter.ref)
    assert done.returncode == 0 and f"redriven: {letter.ref}" in done.stdout, done.stderr
    # What the run says comes of it: it said that the request could be placed now.
    assert [line for line in done.stdout.splitlines() if "warning" in line] == [
        f"warning: {letter.ref}, the request storefront/test/{req.order_ref}, was answered"
        " order.rejected: its order_ref names another order, which stands: it is never placed"
        " under it: sent as it is, it is dead-lettered again (order_ref_reused) and the same"
        " order.rejected published again (--value-file with another order_ref places it under"
        " that one)"
    ], done.stdout
    await caravan.wait_for(letters, count=3)
    await quiet()
    assert (len(rejected()), len(letters()), await counted()) == (3, 3, counted_before + 3)
    assert len({(answer.source, answer.id) for answer in rejected()}) == 1  # redriven: the same
    # Mended back to the order's own body, it is a copy of the order's request, as the warning
    # says: no letter more, no answer more (the warning said it would be both).
    same = tmp_path / "same.json"
    same.write_bytes(new_event(req, source="storefront/test").to_json())
    again = await cli(caravan, "dlq", "redrive", letter.ref, "--again", "--value-file", str(same))
    assert again.returncode == 0 and f"redriven: {letter.ref}" in again.stdout, again.stderr
    assert "unless it holds what that order was placed with" in again.stdout, again.stdout
    await quiet()
    assert (len(rejected()), len(letters()), await counted()) == (3, 3, counted_before + 3)
    rows = await caravan.sql(
        "select order_id, lines from orders.orders where order_ref = :r", r=req.order_ref
    )
    assert [tuple(r) for r in rows] == [(order_id, [{"sku": "T-PEPPER", "quantity": 2}])]
    placed = caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=req.order_ref)
    assert len(placed) == 1
    assert await caravan.one_terminal(order_id) == "order.confirmed"


async def test_a_record_that_is_not_json_is_dead_lettered_and_the_next_order_completes(
    caravan: System,
) -> None:
    key = ref("POISON").encode()
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, b"\xff{not json", key=key)
    req = order(RICH, {"T-PEPPER": 1})
    await caravan.request(req)
    outcome = await caravan.outcome(await caravan.placed(req.order_ref))
    assert outcome.type == "order.confirmed"
    dead = [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key]
    assert len(dead) == 1
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert dead[0].value == b"\xff{not json"
    assert headers["dlq.error"] == "not_json"
    assert headers["dlq.error.message"] == "the value is not UTF-8 text (byte 0xff at offset 0)"
    assert headers["dlq.group"] == "caravan-orders"
    assert headers["dlq.topic"] == Topic.ORDER_REQUESTS.value
    assert int(headers["dlq.offset"]) >= 0 and "dlq.partition" in headers


async def test_a_time_in_seconds_or_a_content_type_not_json_is_dead_lettered_naming_it(
    caravan: System,
) -> None:
    """A storefront with a bug sending ``time`` as seconds since 1970 had its order placed at
    a time it did not mean (pydantic read the number), and one naming ``application/xml``
    for its JSON data had it placed too, with no signal to either. The contract's time is
    RFC 3339 text and its data JSON: each is no CloudEvent here, dead-lettered naming the
    attribute, no order placed, and the order published after them on their partition is."""
    key = ref("ENVELOPE").encode()  # one key: one partition, handled in the order sent
    seconds, xml = order(RICH, {"T-PEPPER": 1}), order(RICH, {"T-PEPPER": 1})
    changes: dict[str, dict[str, Any]] = {
        seconds.order_ref: {"time": 1796505600},
        xml.order_ref: {"datacontenttype": "application/xml"},
    }
    for req in (seconds, xml):
        sent = orjson.loads(new_event(req, source="storefront/test").to_json())
        await caravan.publish_raw(
            Topic.ORDER_REQUESTS.value, orjson.dumps({**sent, **changes[req.order_ref]}), key
        )
    after = order(RICH, {"T-PEPPER": 1})
    await caravan.publish_raw(
        Topic.ORDER_REQUESTS.value, new_event(after, source="storefront/test").to_json(), key
    )
    outcome = await caravan.outcome(await caravan.placed(after.order_ref))
    assert outcome.type == "order.confirmed"
    dead = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key], count=2
    )
    said = {
        orjson.loads(r.value)["data"]["order_ref"]: (
            dict(r.headers)["dlq.error"],
            dict(r.headers)["dlq.error.message"],
        )
        for r in dead
    }
    assert said == {
        seconds.order_ref: (
            b"not_cloudevent",
            b"time: should be an RFC 3339 date and time text, e.g. 2026-11-30T08:00:00Z",
        ),
        xml.order_ref: (
            b"not_cloudevent",
            b"datacontenttype: should be application/json: data is a JSON object",
        ),
    }
    refs = [seconds.order_ref, xml.order_ref]
    assert (
        await caravan.scalar("select count(*) from orders.orders where order_ref = any(:r)", r=refs)
        == 0
    )
    await read_to_the_end(caravan, Topic.ORDER_EVENTS.value)  # what the relay sent before
    assert [
        e for e in caravan.log.events(Topic.ORDER_EVENTS) if e.data.get("order_ref") in refs
    ] == []


async def test_a_record_too_big_to_copy_whole_is_dead_lettered_without_its_value(
    caravan: System,
) -> None:
    # Just under what Kafka takes: its copy with the dead-letter headers would be over, and
    # Kafka would refuse it for ever (and every event of the service after it).
    key = ref("HUGE").encode()
    size = 1_048_400
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, b"\xff" * size, key=key)
    req = order(RICH, {"T-PEPPER": 1})
    await caravan.request(req)
    outcome = await caravan.outcome(await caravan.placed(req.order_ref))
    assert outcome.type == "order.confirmed"
    dead = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key]
    )
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert (len(dead), dead[0].value, headers["dlq.error"]) == (1, b"", "not_json")
    assert headers["dlq.value.dropped"].startswith(f"{size} bytes")
    # A redrive would send an empty value: the letter is left out unless one is given.
    bootstrap = caravan.infra.kafka_bootstrap
    letters = [d for d in await ops_dlq.read(bootstrap) if d.key == key]
    done = await ops_dlq.redrive(bootstrap, caravan.infra.database_url, letters)
    assert (done.sent, done.dropped) == ([], [letters[0].ref])


async def test_a_poison_record_whose_redriven_from_is_no_letter_id_is_dead_lettered_without_it(
    caravan: System,
) -> None:
    # Anyone who writes orders.requests.v1 may set the header, to any bytes: copied as it
    # was, NUL made PostgreSQL refuse the letter at every try, and orders handled nothing
    # more on any topic.
    cases = {
        ref("NUL-FROM").encode(): b"orders.requests.v1.dlq:0:\x001",
        ref("LONG-FROM").encode(): b"orders.requests.v1.dlq:0:" + b"1" * 100_000,
    }
    for key, header in cases.items():
        await caravan.publish_raw(
            Topic.ORDER_REQUESTS.value, b"not json", key=key, headers=[(REDRIVEN_FROM, header)]
        )
    req = order(RICH, {"T-PEPPER": 1})
    await caravan.request(req)
    outcome = await caravan.outcome(await caravan.placed(req.order_ref))
    assert outcome.type == "order.confirmed"
    dead = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key in cases], 2
    )
    assert len(dead) == 2
    for letter in dead:
        headers = {k: v.decode() for k, v in letter.headers}
        assert (letter.value, headers["dlq.error"]) == (b"not json", "not_json")
        assert LETTER_REDRIVEN_FROM not in headers
        assert headers[HEADERS_DROPPED] == (
            f"{REDRIVEN_FROM}: not <topic>.dlq:<partition>:<offset>"
        )


async def test_a_valueless_redrive_group_is_none_and_one_naming_no_group_is_dead_lettered(
    caravan: System,
) -> None:
    # Every group skipped both: no group's name is None, and caravan-nobody is no group's.
    valueless, unknown = order(RICH, {"T-PEPPER": 1}), order(RICH, {"T-PEPPER": 1})
    sent = {}
    for req, group in ((valueless, None), (unknown, b"caravan-nobody")):
        sent[req.order_ref] = event = new_event(req, source="storefront/test")
        await caravan.publish_raw(
            Topic.ORDER_REQUESTS.value,
            event.to_json(),
            req.order_ref.encode(),
            headers=[(REDRIVE_GROUP, group)],
        )
    outcome = await caravan.outcome(await caravan.placed(valueless.order_ref))
    assert outcome.type == "order.confirmed"
    key = unknown.order_ref.encode()
    [letter] = await caravan.wait_for(
        lambda: [
            r
            for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq)
            if r.key == key and (GROUP, b"caravan-orders") in r.headers
        ]
    )
    headers = {k: (v or b"").decode() for k, v in letter.headers}
    assert letter.value == sent[unknown.order_ref].to_json()
    assert (headers["dlq.error"], headers["dlq.error.message"]) == (
        "unknown_group",
        f"{REDRIVE_GROUP} names no consumer group",
    )


async def test_orders_with_headers_that_are_not_text_are_placed_with_the_others(
    caravan: System,
) -> None:
    # Kafka allows a header with no value, and any bytes as a value: the records around
    # such a record (in one batch) are handled too, and the record itself.
    reqs = [order(RICH) for _ in range(6)]
    odd: list[list[tuple[str, bytes | None]] | None] = [
        [("x-empty", None)],
        None,
        [("x-binary", b"\xff\xfe\x00"), ("traceparent", b"\xff")],
        None,
        [("x-empty", None), ("x-binary", b"\xc3")],
        None,
    ]
    for req, headers in zip(reqs, odd, strict=True):
        event = new_event(req, source="storefront/test").to_json()
        await caravan.publish_raw(
            Topic.ORDER_REQUESTS.value, event, req.order_ref.encode(), headers=headers
        )
    for req in reqs:
        outcome = await caravan.outcome(await caravan.placed(req.order_ref))
        assert outcome.type == "order.confirmed", req.order_ref


async def test_a_request_keyed_otherwise_is_placed_and_one_in_binary_mode_is_a_letter_only(
    caravan: System,
) -> None:
    """What docs/topics.md tells a storefront of the record around its request: neither its
    key nor its headers are read (keyed otherwise, not keyed, a content-type of another kind:
    placed all the same), so a CloudEvent in binary mode (attributes in ``ce_`` headers, the
    value ``data`` alone) is no CloudEvent here: dead-lettered saying why, and answered
    nothing, as the docs tell a storefront to expect of such a mistake."""
    other, unkeyed, typed, binary = (order(RICH) for _ in range(4))
    sent: list[tuple[OrderRequested, bytes | None, list[tuple[str, bytes | None]] | None]] = [
        (other, b"another-key", None),
        (unkeyed, None, None),
        (typed, typed.order_ref.encode(), [("content-type", b"text/plain")]),
    ]
    for req, key, headers in sent:
        event = new_event(req, source="storefront/test").to_json()
        await caravan.publish_raw(Topic.ORDER_REQUESTS.value, event, key, headers=headers)
    envelope = new_event(binary, source="storefront/test").model_dump(mode="json")
    attributes = [(f"ce_{a}", str(envelope[a]).encode()) for a in ("specversion", "id", "source")]
    headers = [*attributes, ("ce_type", b"order.requested"), ("content-type", b"application/json")]
    key = binary.order_ref.encode()
    data = orjson.dumps(envelope["data"])
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, data, key, headers=headers)
    for req, _, _ in sent:
        outcome = await caravan.outcome(await caravan.placed(req.order_ref))
        assert outcome.type == "order.confirmed", req.order_ref
    letters = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key]
    )
    said = {k: v.decode() for k, v in letters[0].headers}
    assert (said["dlq.error"], said["dlq.error.message"]) == (
        "not_cloudevent",
        "specversion: must be given; id: must be given; source: must be given; type: must be"
        " given; time: must be given",
    )
    await published(caravan, "orders", binary.order_ref, Topic.ORDER_EVENTS)
    assert caravan.log.events(Topic.ORDER_EVENTS, order_ref=binary.order_ref) == []


def invalid_request(order_ref: str) -> bytes:
    """An ``order.requested`` whose phone number and line quantity are invalid."""
    return orjson.dumps(
        raw_event(
            "order.requested",
            {
                "order_ref": order_ref,
                "buyer": {"id": "t-rich", "phone": "12345", "locale": "en"},
                "lines": [{"sku": "T-PEPPER", "quantity": 0}],
                "payment": {"method": "microloan"},
            },
        )
    )


async def test_invalid_data_is_rejected_and_dead_lettered(caravan: System) -> None:
    order_ref = ref("BAD")
    value = invalid_request(order_ref)
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, value, key=order_ref.encode())
    rejected = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected", order_ref=order_ref)
    )
    fields = {e["field"] for e in rejected[0].data["errors"]}
    assert {"buyer.phone", "lines.0.quantity"} <= fields
    assert (
        await caravan.scalar("select count(*) from orders.orders where order_ref = :r", r=order_ref)
        == 0
    )
    await caravan.wait_for(
        lambda: [
            r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == order_ref.encode()
        ]
    )


async def test_an_order_id_too_long_to_keep_is_dead_lettered_at_once_as_invalid(
    caravan: System,
) -> None:
    """An order.placed whose order_id is longer than the varchar(36) every service keeps it
    in: each service reading it dead-letters it as invalid data, the reason naming the field
    and the limit, where it was ``handler_error`` ("value too long") after three tries."""
    order_id = f"{uuid.uuid4()}-x"  # 38 characters
    data = {
        "order_id": order_id,
        "order_ref": ref("LONG"),
        "source": "storefront/test",
        "buyer_id": RICH.id,
        "buyer": RICH.model_dump(),
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
    }
    said = f"order_id: must be at most {MAX_ORDER_ID} characters"
    await invalid_at_once(caravan, Topic.ORDER_EVENTS, order_id, data, said, *PLACED_READERS)


PLACED_READERS = ("caravan-inventory", "caravan-notifications")
"""The consumer groups that read order.placed."""


async def invalid_at_once(
    caravan: System, topic: Topic, key: str, data: dict[str, Any], said: str, *groups: str
) -> None:
    """Publish an event of ``data`` (an ``order.placed`` on the orders' topic, a
    ``payment.authorized`` on payments') keyed ``key``, and see each of ``groups`` dead-letter
    it as invalid data at once, the reason ``said`` (not ``handler_error`` after tries)."""
    kind, source = {
        Topic.ORDER_EVENTS: ("order.placed", "caravan/orders"),
        Topic.PAYMENT_EVENTS: ("payment.authorized", "caravan/payments"),
    }[topic]
    value = orjson.dumps(raw_event(kind, data, source=source))
    await caravan.publish_raw(topic.value, value, key=key.encode())
    wanted = {group.encode() for group in groups}
    letters = await caravan.wait_for(
        lambda: [
            dict(r.headers)
            for r in caravan.log.raw(topic.dlq)
            if r.key == key.encode() and dict(r.headers).get("dlq.group") in wanted
        ],
        count=len(wanted),
    )
    assert {h["dlq.group"] for h in letters} == wanted, letters
    assert {(h["dlq.error"], h["dlq.error.message"]) for h in letters} == {
        (b"invalid_data", said.encode())
    }, letters


async def test_an_empty_order_id_or_a_loan_id_too_long_to_keep_is_dead_lettered_at_once(
    caravan: System,
) -> None:
    """An order.placed whose order_id is empty was kept as an order of no id; a
    payment.authorized whose loan_id is 10 kB reached orders' varchar(64) (``handler_error``
    after three tries). Each is dead-lettered as invalid data at once, naming the field."""
    key = str(uuid.uuid4())  # the records' key: an empty order id cannot be one
    placed = {
        "order_id": "",
        "order_ref": ref("EMPTY"),
        "source": "storefront/test",
        "buyer_id": RICH.id,
        "buyer": RICH.model_dump(),
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
    }
    said = "order_id: must not be empty"
    await invalid_at_once(caravan, Topic.ORDER_EVENTS, key, placed, said, *PLACED_READERS)
    authorized = {
        "order_id": key,
        "buyer_id": RICH.id,
        "method": "microloan",
        "amount_fen": 100,
        "loan_id": "l" * 10_000,
    }
    said = f"loan_id: must be at most {MAX_LOAN_ID} characters"
    await invalid_at_once(caravan, Topic.PAYMENT_EVENTS, key, authorized, said, "caravan-orders")


async def test_a_validators_refusal_is_said_in_its_own_words(caravan: System) -> None:
    """A request naming one sku twice is refused in the validator's words, on Kafka (its
    order.rejected and its dead letter's reason) and over HTTP (the 422 problem), without
    pydantic's "Value error, " before them: on the second line's sku, with the request's
    other errors. Said of the whole body (``"field": "body"``), it came only once the other
    fields were mended, and a storefront met its errors in two rounds."""
    order_ref = ref("TWICE")
    data = {
        "order_ref": order_ref,
        "buyer": {**RICH.model_dump(), "phone": "0991"},
        "lines": [{"sku": "T-PEPPER", "quantity": 1}, {"sku": "T-PEPPER", "quantity": 2}],
        "payment": {"method": "prepaid"},
    }
    said = "each sku may appear in at most one line: line 0 has it too"
    phone = "should be an E.164 phone number, + and 7 to 15 digits: e.g. +8613912345678"
    errors = [
        {"field": "buyer.phone", "message": phone},
        {"field": "lines.1.sku", "message": said},
    ]
    value = orjson.dumps(raw_event("order.requested", data))
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, value, key=order_ref.encode())
    [rejected] = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected", order_ref=order_ref)
    )
    assert rejected.data["errors"] == errors
    [letter] = await caravan.wait_for(
        lambda: [
            r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == order_ref.encode()
        ]
    )
    reason = f"buyer.phone: {phone}; lines.1.sku: {said}"
    assert dict(letter.headers)["dlq.error.message"] == reason.encode()
    answer = await caravan.client.post("/orders", json=data, headers={"Idempotency-Key": ref()})
    assert (answer.status_code, answer.json()["errors"]) == (422, errors)


async def test_every_error_of_a_request_is_said_in_our_words_on_kafka_and_http(
    caravan: System,
) -> None:
    """Each pydantic error a storefront's request can meet (tests/unit/test_field_errors.py's
    BAD_REQUESTS: a field missing, a string too long, "2" for a quantity, no lines...) is said
    in Caravan's words in the order.rejected that answers it and in the 422 of the same body
    sent to POST /orders: "must be given", not pydantic's "Field required"."""
    asked = {}
    for data, field, message in BAD_REQUESTS:
        request = raw_event("order.requested", data)
        asked[request["id"]] = {"field": field, "message": message}
        await caravan.publish_raw(Topic.ORDER_REQUESTS.value, orjson.dumps(request), key=None)
    rejected = await caravan.wait_for(
        lambda: [
            e
            for e in caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected")
            if e.causationid in asked
        ],
        count=len(asked),
    )
    for event in rejected:
        assert asked[event.causationid or ""] in event.data["errors"], event.data["errors"]
    for data, field, message in BAD_REQUESTS:
        if field == "order_ref":  # the body's is optional: the Idempotency-Key is the order_ref
            continue
        body = {k: v for k, v in data.items() if k != "order_ref"}
        answer = await caravan.client.post("/orders", json=body, headers={"Idempotency-Key": ref()})
        assert answer.status_code == 422, answer.text
        assert {"field": field, "message": message} in answer.json()["errors"], answer.text


async def test_a_request_whose_data_is_no_object_is_rejected_too(caravan: System) -> None:
    """A storefront whose client library sends ``data`` as a JSON string (encoded twice),
    or none at all, is told so by an ``order.rejected`` caused by its request: it was only
    dead-lettered as no CloudEvent, and the storefront heard nothing."""
    order_ref = ref("STR")
    requests = {}
    for data in (orjson.dumps({"order_ref": order_ref}).decode(), None):
        envelope = raw_event("order.requested", data)
        expected = "must be a JSON object" if data else "must be given"
        requests[envelope["id"]] = expected
        await caravan.publish_raw(
            Topic.ORDER_REQUESTS.value, orjson.dumps(envelope), key=order_ref.encode()
        )
    rejected = await caravan.wait_for(
        lambda: [
            e
            for e in caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected")
            if e.causationid in requests
        ],
        count=2,
    )
    for event in rejected:
        expected = requests[event.causationid or ""]
        assert event.data["errors"] == [{"field": "data", "message": expected}]
        assert event.data["source"] == "storefront/test"
    letters = await caravan.wait_for(
        lambda: [
            r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == order_ref.encode()
        ],
        count=2,
    )
    assert {dict(r.headers).get("dlq.error") for r in letters} == {b"invalid_data"}


async def test_a_field_missing_is_said_with_the_name_sent_nearest_it(caravan: System) -> None:
    """A storefront's deploy sent each line's quantity as ``"qty"``: the dead letter's reason
    (``caravan dlq list``) and the ``order.rejected`` its developer reads said
    "lines.0.quantity: Field required", nothing of the ``qty`` beside it. Both now name it."""
    order_ref = ref("QTY")
    data = {
        "order_ref": order_ref,
        "buyer": RICH.model_dump(),
        "lines": [{"sku": "T-PEPPER", "qty": 1}],
        "payment": {"method": "prepaid"},
    }
    request = raw_event("order.requested", data)
    await caravan.publish_raw(
        Topic.ORDER_REQUESTS.value, orjson.dumps(request), key=order_ref.encode()
    )
    said = "must be given (qty was sent: a misspelling of quantity?)"
    [rejected] = await caravan.wait_for(
        lambda: [
            e
            for e in caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected")
            if e.causationid == request["id"]
        ]
    )
    assert rejected.data["errors"] == [{"field": "lines.0.quantity", "message": said}]
    [letter] = await caravan.wait_for(
        lambda: [
            r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == order_ref.encode()
        ]
    )
    assert dict(letter.headers)["dlq.error.message"] == f"lines.0.quantity: {said}".encode()


async def test_a_request_naming_no_order_ref_is_answered_with_an_empty_one(
    caravan: System,
) -> None:
    """The contract's ``order.rejected`` carries ``order_ref``, ``source`` and ``errors``: a
    request naming no order_ref is answered with an empty one (not null, nor none, which a
    reader of the contract's fields would not take), keyed by it, and correlated by the
    request's ``id``, as docs/topics.md says."""
    data = {"buyer": RICH.model_dump(), "lines": [{"sku": "T-PEPPER", "quantity": 1}]}
    request = raw_event("order.requested", {**data, "payment": {"method": "prepaid"}})
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, orjson.dumps(request), key=None)
    [record] = await caravan.wait_for(
        lambda: [
            r
            for r in caravan.log.raw(Topic.ORDER_EVENTS.value)
            if request["id"].encode() in r.value
            and orjson.loads(r.value).get("causationid") == request["id"]
        ]
    )
    rejected = orjson.loads(record.value)
    assert (rejected["type"], rejected["correlationid"]) == ("order.rejected", request["id"])
    assert rejected["data"] == {
        "order_ref": "",
        "source": "storefront/test",
        "errors": [{"field": "order_ref", "message": "must be given"}],
    }
    assert record.key == b""


async def test_a_request_whose_answer_would_be_too_big_to_publish_is_still_answered(
    caravan: System,
) -> None:
    """An ``order_ref`` that is no string, near the broker's limit (a list of 360,000 zeros:
    720 KB), was named whole as the ``order.rejected``'s correlation id, one and a half
    times as big: over what the producer sends, so the orders outbox stopped at it and
    nothing of the service was published after it (every order stayed pending)."""
    source = f"storefront/big-{uuid.uuid4().hex[:8]}"
    value = orjson.dumps(
        raw_event(
            "order.requested",
            {"order_ref": [0] * 360_000, "buyer": {"id": "b"}, "lines": []},
            source=source,
        )
    )
    assert 700_000 < len(value) < 1_000_000
    await caravan.publish_raw(Topic.ORDER_REQUESTS.value, value, key=b"big")
    [rejected] = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected", source=source)
    )
    assert rejected.data["order_ref"] == str([0] * 30)[:64]
    assert len(rejected.to_json()) < 10_000
    req = order(RICH, {"T-PEPPER": 1})
    await caravan.request(req)
    assert (await caravan.outcome(await caravan.placed(req.order_ref))).type == "order.confirmed"


def order_events(caravan: System, order_id: str) -> list[CloudEvent]:
    """Every event about ``order_id`` on the four topics (texts included)."""
    topics = (
        Topic.ORDER_EVENTS,
        Topic.INVENTORY_EVENTS,
        Topic.PAYMENT_EVENTS,
        Topic.NOTIFICATION_EVENTS,
    )
    return [e for topic in topics for e in caravan.log.events(topic, order_id=order_id)]


async def test_every_event_of_an_order_names_the_event_that_caused_it(caravan: System) -> None:
    """The contract's ``causationid`` on every event the services emit about an order, also on
    those emitted after the handler's transaction (a prepaid charge's outcome from the gateway
    loop, texts from the SMS dispatcher), and each names an event of the same order: every
    chain leads back to the storefront's request."""
    cases = [
        (order(RICH, {"T-PEPPER": 1}), "payment.authorized"),  # prepaid: the gateway loop
        (order(ZH, {"T-HONEY": 1}, method="microloan", term=2), "payment.authorized"),
        (order(POOR, {"T-HONEY": 1}, method="microloan", term=6), "payment.declined"),
    ]
    for req, payment in cases:
        request = await caravan.request(req)
        order_id = await caravan.placed(req.order_ref)
        outcome = await caravan.outcome(order_id)
        texts = partial(caravan.log.events, Topic.NOTIFICATION_EVENTS, order_id=order_id)
        if outcome.type == "order.confirmed":  # the buyer's text and the seller's, and sold
            await caravan.wait_for(texts, 2)
            sold = partial(caravan.log.events, Topic.INVENTORY_EVENTS, type="stock.sold")
            await caravan.wait_for(partial(sold, order_id=order_id))
        else:
            await caravan.wait_for(texts)
        events = order_events(caravan, order_id)
        assert payment in {e.type for e in events}
        ids = {e.id: e for e in events} | {request.id: request}
        for event in events:
            assert event.correlationid == order_id, event
            assert event.causationid in ids, f"{event.type} names {event.causationid}"
            chain = [event.type]
            cause = event
            while cause.id != request.id:  # every chain ends at the request, with no loop
                cause = ids[cause.causationid or ""]
                chain.append(cause.type)
                assert len(chain) <= len(ids), chain
        sent = [e for e in events if e.type == "sms.sent"]
        assert {ids[t.causationid or ""].type for t in sent} == {outcome.type}

"""What a request held that Caravan ignored (:func:`shared.events.ignored.ignored_fields`),
and how operations are told of it (:func:`services.orders.handlers.tell_ignored`): a drill's
storefront sent ``"delivry"``, and its order was confirmed with no address, nothing said."""

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.orders import handlers
from services.orders.entrypoints.schemas import OrderBody
from shared.events.ignored import Ignored, ignored_fields
from shared.events.orders import OrderRequested
from shared.logs import Faults

BODY: dict[str, Any] = {
    "order_ref": "SWN-1",
    "buyer": {"id": "b-1", "phone": "+8613912345678", "locale": "ug-CN"},
    "lines": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}],
    "payment": {"method": "microloan", "term_months": 3},
    "delivery": {"county": "Shawan", "address": "Village 3"},
}


def ignored(body: dict[str, Any]) -> Ignored:
    return ignored_fields(body, OrderRequested.model_validate(body))


def test_a_body_caravan_takes_whole_has_nothing_ignored() -> None:
    assert ignored(BODY) == Ignored()
    assert ignored({**BODY, "delivery": None}).fields == []
    prepaid = {**BODY, "payment": {"method": "prepaid", "term_months": None}}
    assert ignored(prepaid).fields == []  # null is its default: nothing given


def test_a_misspelt_field_is_named_and_not_looked_into() -> None:
    body = {k: v for k, v in BODY.items() if k != "delivery"}
    misspelt = {**body, "delivry": {"county": "Shawan", "adress": "Village 3"}}
    assert ignored(misspelt) == Ignored(unknown=("delivry",))


def test_unknown_fields_at_any_depth_are_named_by_their_path_in_the_order_given() -> None:
    body = {
        "buyer": {**BODY["buyer"], "nick": "A-li"},
        "lines": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2, "colour": "red"}],
        "order_ref": "SWN-1",
        "payment": {**BODY["payment"], "card": "x"},
        "delivery": {**BODY["delivery"], "zip": "832100"},
        "topic": "orders.requests.v1",  # a class attribute of the model, not a field
    }
    assert ignored(body).fields == [
        "buyer.nick",
        "lines.1.colour",
        "payment.card",
        "delivery.zip",
        "topic",
    ]


def test_a_prepaid_payment_s_term_months_is_ignored_as_meaning_nothing() -> None:
    prepaid = {**BODY, "payment": {"method": "prepaid", "term_months": 6}}
    assert ignored(prepaid) == Ignored(unused=("payment.term_months",))
    # A microloan's is its loan's: taken.
    assert ignored(BODY).unused == ()
    both = {**prepaid, "delivry": {}, "payment": {**prepaid["payment"], "due": 1}}
    assert ignored(both).fields == ["payment.due", "delivry", "payment.term_months"]


def test_the_http_body_is_walked_as_the_topic_s_data_is() -> None:
    body = {k: v for k, v in BODY.items() if k != "order_ref"} | {"delivry": {}}
    assert ignored_fields(body, OrderBody.model_validate(body)).fields == ["delivry"]


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    """The counter of ignored fields, in a registry of the test's own: the process's shows it
    at 0 to tests/unit/test_counters_start_at_zero.py."""
    registry = CollectorRegistry()
    own = Counter("caravan_orders_ignored_fields", "", ["field"], registry=registry)
    monkeypatch.setattr(handlers, "IGNORED_FIELDS", own)
    return registry


def test_operations_are_told_the_names_never_what_they_held(
    caplog: pytest.LogCaptureFixture, counter: CollectorRegistry
) -> None:
    body = {
        **BODY,
        "payment": {"method": "prepaid", "term_months": 6},
        "buyer": {**BODY["buyer"], "note": "+8613900000009 at the gate"},
        "delivry": {"county": "Shawan", "address": "Village 9"},
    }
    with caplog.at_level(logging.INFO, logger="services.orders.handlers"):
        handlers.tell_ignored(
            "order.requested storefront/test/SWN-1", "storefront/test", ignored(body)
        )
    [line] = [r for r in caplog.records if r.name == "services.orders.handlers"]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "order.requested storefront/test/SWN-1: ignored buyer.note, delivry (no such field in"
        " order.requested); payment.term_months (meaning nothing for what was sent)"
    )
    # A request counts once under each: two unknown fields are one request sending them.
    counted = {
        sample.labels["field"]: sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"unknown": 1, "payment.term_months": 1}


def test_a_body_of_many_unknown_names_is_one_line_of_bounded_length(
    caplog: pytest.LogCaptureFixture, counter: CollectorRegistry
) -> None:
    many = {**BODY, **{f"x{i}": i for i in range(1000)}, "y" * 5000: 1}
    with caplog.at_level(logging.INFO, logger="services.orders.handlers"):
        handlers.tell_ignored("POST /orders SWN-1 of shawan", "shawan", ignored(many))
    [line] = [r.getMessage() for r in caplog.records if r.name == "services.orders.handlers"]
    assert line.startswith("POST /orders SWN-1 of shawan: ignored x0, x1, ") and len(line) < 300
    assert line.endswith(", x9 and 991 more (no such field in order.requested)"), line


def test_the_same_fields_from_the_same_sender_are_said_once_a_minute_and_counted_each_time(
    caplog: pytest.LogCaptureFixture, counter: CollectorRegistry
) -> None:
    """A storefront adding a field of its own to every order would write a warning an order
    (hundreds a second under load): the same fields from the same sender are said as a
    retried fault's warnings are, once and then once a minute saying how many were not; other
    fields, or another sender, are said at once; the counter counts every request."""
    now = [0.0]
    faults = Faults(clock=lambda: now[0])
    misspelt = ignored({**BODY, "delivry": {}})
    said: list[str] = []
    with caplog.at_level(logging.INFO, logger="services.orders.handlers"):
        for at, sender, what in [
            (0, "shawan", misspelt),
            (1, "shawan", misspelt),
            (2, "shawan", misspelt),
            (3, "aksu", misspelt),
            (4, "shawan", ignored({**BODY, "colour": "red"})),
            (61, "shawan", misspelt),
        ]:
            now[0] = at
            caplog.clear()
            handlers.tell_ignored(f"POST /orders SWN-{at} of {sender}", sender, what)
            [record] = [r for r in caplog.records if r.name == "services.orders.handlers"]
            said.append(record.getMessage() if faults.filter(record) else "")
    ends = ": ignored delivry (no such field in order.requested)"
    assert said == [
        "POST /orders SWN-0 of shawan" + ends,
        "",
        "",
        "POST /orders SWN-3 of aksu" + ends,
        "POST /orders SWN-4 of shawan: ignored colour (no such field in order.requested)",
        f"POST /orders SWN-61 of shawan{ends} (2 more like it not logged; the first 61 s ago)",
    ]
    counted = {
        sample.labels["field"]: sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"unknown": 6}

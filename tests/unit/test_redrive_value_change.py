"""What ``caravan dlq redrive --value-file`` records of the value it sent instead of a dead
letter's: the audit trail said only ``"replaced_value": true``; it now says which JSON paths
differ and the SHA-256 of each value, never what either holds (a buyer's phone)."""

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from caravan.ops.dlq import WHOLE_VALUE, DeadLetter, differing_paths, rejected_request, value_change

REQUEST = {
    "type": "order.requested",
    "data": {
        "order_ref": "SWN-1",
        "buyer": {"id": "b-1", "phone": "13900000001", "locale": "en"},
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
    },
}


def mended(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(orjson.dumps(REQUEST))
    for path, new in changes.items():
        *parents, last = path.split("__")
        at: Any = value
        for name in parents:
            at = at[int(name)] if name.isdigit() else at[name]
        if new is None:
            del at[last]
        else:
            at[int(last) if last.isdigit() else last] = new
    return value


@pytest.mark.parametrize(
    ("after", "paths"),
    [
        (REQUEST, []),
        (mended(data__buyer__phone="+8613900000001"), ["$.data.buyer.phone"]),
        (mended(data__buyer__locale=None), ["$.data.buyer.locale"]),  # removed
        (mended(data__note="gift"), ["$.data.note"]),  # added
        (mended(data__lines__0__quantity=1.0), ["$.data.lines[0].quantity"]),  # 1 and 1.0
        (mended(data__lines__0__quantity=True), ["$.data.lines[0].quantity"]),  # 1 and true
        (
            mended(data__lines=[{"sku": "T-PEPPER", "quantity": 1}, {"sku": "T-HONEY"}]),
            ["$.data.lines[1]"],
        ),
        (mended(data__buyer="b-1"), ["$.data.buyer"]),  # an object became a string
        (mended(**{"data__buyer__given name": "Ayşe"}), ['$.data.buyer["given name"]']),
        (
            mended(type="order.requested.v2", data__order_ref="SWN-2"),
            ["$.data.order_ref", "$.type"],
        ),
    ],
)
def test_the_paths_where_two_json_values_differ(after: Any, paths: list[str]) -> None:
    assert differing_paths(REQUEST, after) == paths


def test_values_that_are_not_objects_differ_at_their_root_or_items() -> None:
    assert differing_paths([1, 2], [1, 3, 4]) == ["$[1]", "$[2]"]
    assert differing_paths("a", "b") == ["$"]
    assert differing_paths(None, None) == []


def test_a_value_change_names_paths_and_digests_never_what_the_values_hold() -> None:
    before = orjson.dumps(REQUEST)
    after = orjson.dumps(mended(data__buyer__phone="+8613900000001"))
    change = value_change(before, after)
    assert change == {
        "before_sha256": hashlib.sha256(before).hexdigest(),
        "after_sha256": hashlib.sha256(after).hexdigest(),
        "changed": ["$.data.buyer.phone"],
    }
    assert "13900000001" not in orjson.dumps(change).decode()


@pytest.mark.parametrize(
    ("before", "after"),
    [(b"not json", orjson.dumps(REQUEST)), (orjson.dumps(REQUEST), b'{"type": ')],
)
def test_a_value_that_is_not_json_is_replaced_whole(before: bytes, after: bytes) -> None:
    assert value_change(before, after)["changed"] == WHOLE_VALUE


def letter(topic: str, group: str, error: str, value: bytes) -> DeadLetter:
    at = datetime(2026, 12, 5, tzinfo=UTC)
    headers = {"dlq.group": group, "dlq.error": error}
    return DeadLetter(f"{topic}.dlq", 0, 1, at, b"SWN-1", value, headers)


@pytest.mark.parametrize(
    ("topic", "group", "error", "event_type", "said"),
    [
        ("orders.requests.v1", "caravan-orders", "invalid_data", "order.requested", "s/SWN-1"),
        ("orders.requests.v1", "caravan-orders", "order_ref_reused", "order.requested", "s/SWN-1"),
        ("orders.requests.v1", "caravan-orders", "unknown_type", "order.requested.v9", None),
        ("orders.requests.v1", "caravan-orders", "handler_error", "order.requested", None),
        (
            "platform.events.v1",
            "caravan-orders",
            "invalid_data",
            "platform.order_requested",
            "s/SWN-1",
        ),
        ("platform.events.v1", "caravan-orders", "invalid_data", "platform.order_paid", None),
        ("orders.events.v1", "caravan-notifications", "invalid_data", "order.requested", None),
    ],
)
def test_a_redrive_knows_the_requests_the_orders_service_answered_order_rejected(
    topic: str, group: str, error: str, event_type: str, said: str | None
) -> None:
    """A redrive that places a rejected request's order has its source see order.placed after
    the order.rejected it had (the dry run and the run said nothing of it)."""
    value = orjson.dumps({**REQUEST, "type": event_type, "source": "s"})
    assert rejected_request(letter(topic, group, error, value)) == said
    assert rejected_request(letter(topic, group, "not_json", b"not json")) is None

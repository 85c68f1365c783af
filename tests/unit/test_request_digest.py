"""The digest that tells a retry of ``POST /orders`` (same Idempotency-Key, same body) from a
reuse of the key for another order (409)."""

from typing import Any

from services.orders.handlers import earlier_hashes, request_hash
from shared.events.orders import OrderRequested

BODY: dict[str, Any] = {
    "order_ref": "SWN-1",
    "buyer": {"id": "b-1", "phone": "+8613912345678"},
    "lines": [{"sku": "SWN-PEPPER-CAYENNE-1KG", "quantity": 2}],
    "payment": {"method": "prepaid"},
}


class WithANewField(OrderRequested):
    """The request as a later version of the contract may have it: a new optional field."""

    gift_note: str | None = None


def test_a_field_added_to_the_contract_leaves_the_same_body_the_same_request() -> None:
    today = OrderRequested.model_validate(BODY)
    later = WithANewField.model_validate(BODY)
    assert request_hash(later) == request_hash(today)
    # As it was digested before (every field): the retry of an order placed before the
    # upgrade would have been refused as another order.
    assert earlier_hashes(later)[1] != earlier_hashes(today)[1]
    assert earlier_hashes(later)[0] == earlier_hashes(today)[0]


def test_the_same_lines_in_another_order_are_the_same_request() -> None:
    """Each SKU is on one line at most: a retry listing them in another order was refused
    with 409 as another order, and a storefront that then placed it under a new key had two."""
    lines = [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}]
    first = OrderRequested.model_validate({**BODY, "lines": lines})
    again = OrderRequested.model_validate({**BODY, "lines": lines[::-1]})
    assert request_hash(again) == request_hash(first)
    # An order placed before, digested with its lines as given, is still known by a retry.
    assert earlier_hashes(again)[0] != request_hash(again)


def test_defaults_given_or_left_out_are_the_same_request_and_a_change_is_not() -> None:
    explicit = {**BODY, "buyer": {**BODY["buyer"], "locale": "zh-CN"}, "delivery": None}
    assert request_hash(OrderRequested.model_validate(explicit)) == request_hash(
        OrderRequested.model_validate(BODY)
    )
    more = {**BODY, "lines": [{"sku": "SWN-PEPPER-CAYENNE-1KG", "quantity": 3}]}
    assert request_hash(OrderRequested.model_validate(more)) != request_hash(
        OrderRequested.model_validate(BODY)
    )

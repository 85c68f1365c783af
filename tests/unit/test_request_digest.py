"""The digest that tells a retry of ``POST /orders`` (same Idempotency-Key, same body) from a
reuse of the key for another order (409)."""

from typing import Any

from services.orders.handlers import request_hash
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
    assert request_hash(later, legacy=True) != request_hash(today, legacy=True)


def test_defaults_given_or_left_out_are_the_same_request_and_a_change_is_not() -> None:
    explicit = {**BODY, "buyer": {**BODY["buyer"], "locale": "zh-CN"}, "delivery": None}
    assert request_hash(OrderRequested.model_validate(explicit)) == request_hash(
        OrderRequested.model_validate(BODY)
    )
    more = {**BODY, "lines": [{"sku": "SWN-PEPPER-CAYENNE-1KG", "quantity": 3}]}
    assert request_hash(OrderRequested.model_validate(more)) != request_hash(
        OrderRequested.model_validate(BODY)
    )

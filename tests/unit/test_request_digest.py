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


def test_a_retry_across_the_upgrade_that_made_the_locale_optional_is_the_same_request() -> None:
    """``buyer.locale`` left out was ``zh-CN`` (a default) until 2026-12-06, and is None since
    (the seeded locale is chosen later): the digests of an order placed before, given either
    way, are as 72845f0 made them, so that its retry is not refused as another order (409)."""
    before = {  # request_hash, then earlier_hashes, at 72845f0
        None: (
            "13227e42e679c05f5e0819bae295114ed1b95f6959b0c0c829f7d962f081e80f",
            "0827318df301e782acc9202c6045f771c8feb0c5363ddfdcf479699620efbcf9",
        ),
        "zh-CN": (
            "13227e42e679c05f5e0819bae295114ed1b95f6959b0c0c829f7d962f081e80f",
            "0827318df301e782acc9202c6045f771c8feb0c5363ddfdcf479699620efbcf9",
        ),
        "ug-CN": (
            "a4e405aad335815cde8401edcfc174f1f59bd683d7b50de445514eeb08b2e948",
            "29ef1dfe69375c22e589877a7e7e98bace5496b41f43d0ce8f84df85abdafd3b",
        ),
    }
    for locale, (given, every) in before.items():
        buyer = BODY["buyer"] if locale is None else {**BODY["buyer"], "locale": locale}
        request = OrderRequested.model_validate({**BODY, "buyer": buyer})
        assert (request_hash(request), *earlier_hashes(request)) == (given, given, every), locale

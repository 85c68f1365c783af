"""A platform order whose buyer was erased (docs/personal-data.md) keeps, of what was placed,
its items alone: a later push of it was told "changed after placed: the delivery address;
the buyer" (the digests gone taken for a change), a problem for every push of it."""

from services.platform.domain.orders import PlatformOrder, as_placed, changes_since

ORDER = PlatformOrder.model_validate(
    {
        "order_id": "P-1",
        "status": "paid",
        "buyer": {"id": "nick-1", "phone": "+8613900000077"},
        "items": [{"sku": "MKT-PEPPER", "quantity": 2}],
        "delivery": {"county": "Shawan", "address": "1 Walnut Lane"},
    }
)


def test_a_push_of_an_erased_buyers_order_is_compared_by_its_items_alone() -> None:
    placed = as_placed(ORDER)
    erased = {"items": placed["items"]}
    assert changes_since(erased, ORDER) == []
    more = ORDER.model_copy(update={"items": [ORDER.items[0].model_copy(update={"quantity": 3})]})
    assert changes_since(erased, more) == ["items: 'MKT-PEPPER' 2 -> 3"]
    moved = ORDER.model_copy(update={"delivery": None})
    assert changes_since(placed, moved) == ["the delivery address"]  # not erased: compared

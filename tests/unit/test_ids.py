"""The ids Caravan mints sort in the order they were minted (UUID version 7)."""

import uuid

from shared.events.envelope import new_event
from shared.events.inventory import StockSold
from shared.ids import answer_id, new_id


def test_ids_are_uuids_of_version_7_in_the_order_minted() -> None:
    ids = [new_id() for _ in range(50_000)]  # many in each millisecond
    assert all(uuid.UUID(i).version == 7 and str(uuid.UUID(i)) == i for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_events_get_them() -> None:
    events = [
        new_event(StockSold(order_id=new_id()), source="caravan/inventory") for _ in range(100)
    ]
    assert [uuid.UUID(e.id).version for e in events] == [7] * 100
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_an_answer_to_the_same_event_is_the_same_event() -> None:
    """A request delivered twice (or redriven) was answered with two order.rejected of two
    ids, which readers deduplicating by (source, id) could not tell for one."""
    first = answer_id("order.rejected", "storefront/x", "e-1", b'{"order_ref": "A"}')
    assert uuid.UUID(first).version == 5
    assert answer_id("order.rejected", "storefront/x", "e-1", b'{"order_ref": "A"}') == first
    assert answer_id("order.rejected", "storefront/x", "e-1", b'{"order_ref": "B"}') != first
    assert answer_id("order.rejected", "storefront/y", "e-1", b'{"order_ref": "A"}') != first
    assert answer_id("order.placed", "storefront/x", "e-1", b'{"order_ref": "A"}') != first

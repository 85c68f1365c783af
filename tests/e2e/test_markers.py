"""The markers' own failures (tests/e2e/markers.py): a wait that cannot end says so soon."""

import pytest

from shared.topics import Topic, consumer_group
from tests.e2e import markers
from tests.e2e.test_saga import order
from tests.harness import System


async def test_drained_names_a_group_no_service_reads_as_soon(
    caravan: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group behind that no service reads as (its service not running, or a name no
    service has) never catches up: drained waited its whole timeout, 120 s, and said only
    that the group had not read to the end. It fails once the group has had no member for
    MEMBERLESS_SECONDS (30, here 1); a group merely behind, its service's consumers its
    members, is waited for."""
    monkeypatch.setattr(markers, "MEMBERLESS_SECONDS", 1.0)
    req = order()
    await caravan.request(req)  # a record on orders.requests, whatever ran before
    nobody = r"group caravan-nobody is behind with no member for \d+s \(Dead: .*orders\.requests"
    with pytest.raises(AssertionError, match=nobody):
        await markers.drained(caravan, {"caravan-nobody": [Topic.ORDER_REQUESTS]})
    await markers.drained(caravan, {consumer_group("orders"): [Topic.ORDER_REQUESTS]})
    await caravan.outcome(await caravan.placed(req.order_ref))

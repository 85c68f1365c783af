"""docs/personal-data.md's erasure of a buyer, run as the page writes it, reaches what it says
it does: the buyer's number and platform buyer id, and their digests. ``request_hash`` (a
SHA-256 of the request, the buyer's number in it) and ``platform_orders.placed``'s digests
were kept "for ever": an unsalted digest of a mobile number is found again by trying the
seven billion of them, with the fields the row keeps."""

import json
import re
import uuid

from caravan.checkout import REPO_ROOT
from services.orders.handlers import request_hash
from shared.events.orders import Buyer
from tests.e2e.test_saga import order
from tests.harness import System


def erasure() -> list[str]:
    """The statements of docs/personal-data.md's "Erasing a buyer", in order."""
    page = (REPO_ROOT / "docs" / "personal-data.md").read_text()
    section = page.split("## Erasing a buyer", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block, "no SQL under Erasing a buyer"
    return [s.strip() for s in block.group(1).split(";") if s.strip()]


async def test_erasing_a_buyer_reaches_the_digests_of_their_number(caravan: System) -> None:
    buyer = Buyer(id=f"t-erased-{uuid.uuid4().hex[:8]}", phone="+8613900000077", locale="en")
    req = order(buyer)
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    hashed = "SELECT request_hash FROM orders.orders WHERE order_id = :o"
    assert await caravan.scalar(hashed, o=order_id) == request_hash(req)
    app, nick = f"t-erase-{uuid.uuid4().hex[:6]}", f"nick-{buyer.id}"
    placed = {"items": {"MKT-PEPPER": 2}, "delivery": "d" * 64, "buyer": "b" * 64}
    await caravan.execute(
        "INSERT INTO platform.platform_orders (app, platform_order_id, request_event_id,"
        " order_id, placed) VALUES (:app, :p, :e, :o, CAST(:placed AS jsonb))",
        app=app,
        p=f"P-{order_id}",
        e=str(uuid.uuid4()),
        o=order_id,
        placed=json.dumps(placed),
    )
    await caravan.execute(
        "INSERT INTO auth.audit (actor, action, target, after) VALUES"
        " ('t', 'platform.mapping.put', :target, CAST(:after AS jsonb))",
        target=f"{app}/buyer/{nick}",
        after=json.dumps({"buyer_id": buyer.id, "phone": buyer.phone}),
    )

    for statement in erasure():
        await caravan.execute(statement, buyer=buyer.id, phone=buyer.phone)

    assert await caravan.scalar(hashed, o=order_id) == "erased"
    kept = "SELECT placed FROM platform.platform_orders WHERE order_id = :o"
    assert await caravan.scalar(kept, o=order_id) == {"items": {"MKT-PEPPER": 2}}
    audited = await caravan.sql(
        "SELECT target, before, after FROM auth.audit WHERE target LIKE :app", app=f"{app}/%"
    )
    assert [tuple(row) for row in audited] == [(f"{app}/buyer/erased", None, None)]
    assert await caravan.scalar(
        "SELECT status FROM orders.orders WHERE order_id = :o", o=order_id
    ), "the order is kept"

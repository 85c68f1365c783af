"""Reservations through the running saga: earliest ``best_before`` first, lines spanning lots,
exact release on cancellation, and ``out_of_season`` / ``unknown_sku`` told apart."""

import uuid
from functools import partial
from typing import Any

from shared.events.envelope import new_event
from shared.events.orders import OrderPlaced, OrderRequested
from shared.seed import LotSeed
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed
from tests.harness import System, ref

BUYER = {"id": "inv-buyer", "phone": "+8613900007001", "locale": "en"}
BROKE = {"id": "inv-broke", "phone": "+8613900007002", "locale": "en"}


async def _seed(caravan: System, lots: dict[str, tuple[int, int, int]]) -> str:
    """A fresh SKU with ``lots``: suffix -> (quantity, first day, last day) relative to today."""
    sku = f"INV-RES-{uuid.uuid4().hex[:8]}"
    await caravan.seed(
        one_sku_seed(
            sku,
            500,
            lots,
            [{**BUYER, "credit_limit_fen": 10**9}, {**BROKE, "credit_limit_fen": 0}],
        )
    )
    return sku


def _order(
    lines: dict[str, int], buyer: dict[str, str] = BUYER, loan: bool = False
) -> OrderRequested:
    payment = {"method": "microloan", "term_months": 3} if loan else {"method": "prepaid"}
    return OrderRequested.model_validate(
        {
            "order_ref": ref("INV"),
            "buyer": buyer,
            "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
            "payment": payment,
        }
    )


async def _lots(caravan: System, sku: str) -> dict[str, tuple[int, ...]]:
    rows = await caravan.sql(
        "select lot_id, available, reserved, sold, spoiled from inventory.lots where sku = :s",
        s=sku,
    )
    return {r.lot_id.removeprefix(f"{sku}-"): tuple(r[1:]) for r in rows}


async def _inventory_event(caravan: System, kind: str, order_id: str) -> Any:
    found = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type=kind, order_id=order_id)
    )
    return found[0]


async def test_earliest_best_before_first_and_one_line_spans_lots(caravan: System) -> None:
    sku = await _seed(
        caravan,
        {
            "LATE": (10, -5, 90),
            "EARLY": (3, -5, 5),
            "MID": (4, -5, 40),
            "GONE": (50, -30, -1),  # expired yesterday: never served
            "NEXT": (50, 1, 100),  # on sale from tomorrow
        },
    )
    req = _order({sku: 5})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    reserved = await _inventory_event(caravan, "stock.reserved", order_id)
    taken = [(x["lot_id"], x["quantity"]) for x in reserved.data["lines"][0]["lots"]]
    assert taken == [(f"{sku}-EARLY", 3), (f"{sku}-MID", 2)]
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    await _inventory_event(caravan, "stock.sold", order_id)
    assert await _lots(caravan, sku) == {
        "EARLY": (0, 0, 3, 0),
        "MID": (2, 0, 2, 0),
        "LATE": (10, 0, 0, 0),
        "GONE": (50, 0, 0, 0),
        "NEXT": (50, 0, 0, 0),
    }
    lines = await caravan.sql(
        "select lot_id, quantity from inventory.reservation_lines where order_id = :o"
        " order by lot_id",
        o=order_id,
    )
    assert [tuple(r) for r in lines] == [(f"{sku}-EARLY", 3), (f"{sku}-MID", 2)]


async def test_release_returns_exactly_what_was_held(caravan: System) -> None:
    sku = await _seed(caravan, {"A": (3, -5, 5), "B": (10, -5, 9), "C": (10, -5, 20)})
    req = _order({sku: 5}, BROKE, loan=True)  # no credit: declined after the stock is held
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    reserved = await _inventory_event(caravan, "stock.reserved", order_id)
    assert [(x["lot_id"], x["quantity"]) for x in reserved.data["lines"][0]["lots"]] == [
        (f"{sku}-A", 3),
        (f"{sku}-B", 2),
    ]
    outcome = await caravan.outcome(order_id)
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "credit_declined")
    released = await _inventory_event(caravan, "stock.released", order_id)
    assert (released.data["returned"], released.data["spoiled"]) == (5, 0)
    assert await _lots(caravan, sku) == {
        "A": (3, 0, 0, 0),
        "B": (10, 0, 0, 0),
        "C": (10, 0, 0, 0),
    }
    status = "select status from inventory.reservations where order_id = :o"
    assert await caravan.scalar(status, o=order_id) == "released"
    lines = await caravan.sql(
        "select lot_id, quantity from inventory.reservation_lines where order_id = :o"
        " order by lot_id",
        o=order_id,
    )
    assert [tuple(r) for r in lines] == [(f"{sku}-A", 3), (f"{sku}-B", 2)]  # kept for the record


async def test_out_of_season_and_unknown_sku_are_told_apart(caravan: System) -> None:
    sku = await _seed(caravan, {"OLD": (100, -60, -1), "NEXT": (100, 2, 60)})
    req = _order({sku: 1})
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    outcome = await caravan.outcome(order_id)
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "out_of_season")
    rejected = await _inventory_event(caravan, "stock.rejected", order_id)
    assert rejected.data["skus"] == [sku]

    unknown = _order({sku: 1, "INV-NO-SUCH-SKU": 1})
    await caravan.request(unknown)
    outcome = await caravan.outcome(await caravan.placed(unknown.order_ref))
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "unknown_sku")

    in_season = await _seed(caravan, {"NOW": (2, -1, 10), "OLD": (100, -60, -1)})
    short = _order({in_season: 3})
    await caravan.request(short)
    outcome = await caravan.outcome(await caravan.placed(short.order_ref))
    assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "out_of_stock")
    assert await _lots(caravan, sku) == {"OLD": (100, 0, 0, 0), "NEXT": (100, 0, 0, 0)}
    assert await _lots(caravan, in_season) == {"NOW": (2, 0, 0, 0), "OLD": (100, 0, 0, 0)}


def _answer(caravan: System, order_id: str) -> list[Any]:
    """Inventory's answer to an order: reserved or rejected."""
    found = caravan.log.events(Topic.INVENTORY_EVENTS, order_id=order_id)
    return [e for e in found if e.type in ("stock.reserved", "stock.rejected")]


async def test_an_order_is_on_the_marketplace_s_day_not_utc_s(caravan: System) -> None:
    """An order placed in Shawan at 07:00 on 1 September (23:00 UTC on 31 August) is served
    from a lot on sale from 1 September; and at 04:00 on the day after a lot's best_before
    (20:00 UTC, still its last day in UTC) it is not. (Judged by UTC's day, the first was
    cancelled out_of_season and the second served from the lot past its best_before.)"""
    sku = f"INV-DAY-{uuid.uuid4().hex[:8]}"
    seed = one_sku_seed(sku, 500, {}, [{**BROKE, "credit_limit_fen": 0}])
    lot = {"sku": sku, "quantity": 5, "available_from": "2026-09-01", "best_before": "2026-09-30"}
    lots = [LotSeed.model_validate({"lot_id": f"{sku}-SEP", **lot})]
    await caravan.seed(seed.model_copy(update={"lots": lots}))
    outcomes = {}
    for placed_at in ("2026-08-31T23:00:00Z", "2026-09-30T20:00:00Z"):
        order_id = str(uuid.uuid4())
        placed = OrderPlaced.model_validate(
            {
                "order_id": order_id,
                "order_ref": ref("INV-DAY"),
                "source": "storefront/test",
                "buyer_id": BROKE["id"],
                "lines": [{"sku": sku, "quantity": 1}],
                "buyer": BROKE,
                "payment": {"method": "microloan", "term_months": 1},  # BROKE's is declined
                "placed_at": placed_at,
            }
        )
        event = new_event(placed, source="caravan/orders", correlation_id=order_id)
        await caravan.publish_raw(Topic.ORDER_EVENTS.value, event.to_json(), order_id.encode())
        found = await caravan.wait_for(partial(_answer, caravan, order_id))
        outcomes[placed_at] = (found[0].type, found[0].data.get("reason"))
    assert outcomes == {
        "2026-08-31T23:00:00Z": ("stock.reserved", None),
        "2026-09-30T20:00:00Z": ("stock.rejected", "out_of_season"),
    }

"""Reservations through the running saga: earliest ``best_before`` first, lines spanning lots,
exact release on cancellation, and ``out_of_season`` / ``unknown_sku`` told apart; a batch
locks only the lots that can serve it."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from services.inventory import handlers
from services.inventory.adapters.tables import inbox, outbox
from shared.db import Database
from shared.events.envelope import new_event
from shared.events.orders import OrderPlaced, OrderRequested
from shared.events.registry import Parsed, parse_record
from shared.messaging.uow import UnitOfWork
from shared.seed import LotSeed
from shared.settings import Settings
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


def _placed(sku: str, quantity: int, placed_at: str | None = None) -> OrderPlaced:
    """An ``order.placed`` of BROKE's for ``quantity`` of ``sku`` (a microloan he is declined)."""
    order_id = str(uuid.uuid4())
    return OrderPlaced.model_validate(
        {
            "order_id": order_id,
            "order_ref": ref("INV"),
            "source": "storefront/test",
            "buyer_id": BROKE["id"],
            "lines": [{"sku": sku, "quantity": quantity}],
            "buyer": BROKE,
            "payment": {"method": "microloan", "term_months": 1},
            **({"placed_at": placed_at} if placed_at else {}),
        }
    )


async def _seed_dated(caravan: System, sku: str, lots: dict[str, tuple[int, str, str]]) -> None:
    """``sku`` with ``lots``: suffix -> (quantity, first day, last day), dates in ISO."""
    seed = one_sku_seed(sku, 500, {}, [{**BROKE, "credit_limit_fen": 0}])
    given = [
        LotSeed(lot_id=f"{sku}-{suffix}", sku=sku, quantity=q, available_from=a, best_before=b)
        for suffix, (q, a, b) in lots.items()
    ]
    await caravan.seed(seed.model_copy(update={"lots": given}))


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
    cancelled out_of_season and the second served from the lot past its best_before.) The
    session's market zone is within two hours of Beijing time (tests/conftest.py): the same
    days."""
    sku = f"INV-DAY-{uuid.uuid4().hex[:8]}"
    await _seed_dated(caravan, sku, {"SEP": (5, "2026-09-01", "2026-09-30")})
    outcomes = {}
    for placed_at in ("2026-08-31T23:00:00Z", "2026-09-30T20:00:00Z"):
        placed = _placed(sku, 1, placed_at)
        order_id = placed.order_id
        event = new_event(placed, source="caravan/orders", correlation_id=order_id)
        await caravan.publish_raw(Topic.ORDER_EVENTS.value, event.to_json(), order_id.encode())
        found = await caravan.wait_for(partial(_answer, caravan, order_id))
        outcomes[placed_at] = (found[0].type, found[0].data.get("reason"))
    assert outcomes == {
        "2026-08-31T23:00:00Z": ("stock.reserved", None),
        "2026-09-30T20:00:00Z": ("stock.rejected", "out_of_season"),
    }


@pytest.fixture
async def uow(caravan: System) -> AsyncIterator[UnitOfWork]:
    """The inventory schema's unit of work, for handling a batch here (on SKUs of the test's
    own, which the running service never sees)."""
    db = Database(Settings(DATABASE_URL=caravan.infra.database_url), "inventory")
    try:
        yield UnitOfWork(db, source="caravan/inventory", outbox=outbox, inbox=inbox)
    finally:
        await db.dispose()


def _parsed(order: OrderPlaced) -> Parsed:
    return parse_record(Topic.ORDER_EVENTS, new_event(order, source="caravan/orders").to_json())


class _RolledBack(Exception):
    """Raised to leave a transaction without committing what its handlers wrote."""


async def test_a_batch_locks_only_the_lots_that_can_serve_it(
    caravan: System, uow: UnitOfWork
) -> None:
    """A SKU restocked daily has hundreds of lots after a season, nearly all expired or
    empty: the batch's one locking statement takes the lots in season with stock, and leaves
    the others to whoever changes them (a release, an adjustment), unlocked and unwritten."""
    dead = {
        **{f"OLD{n:02d}": (10, -60 - n, -1 - n) for n in range(10)},  # expired, stock left
        **{f"EMPTY{n:02d}": (0, -5, 30) for n in range(7)},  # in season, nothing left
        **{f"NEXT{n:02d}": (10, 5 + n, 60) for n in range(3)},  # not on sale yet
    }
    sku = await _seed(caravan, {"NOW": (5, -1, 10), **dead})
    async with uow.begin() as tx:
        await handlers.prefetch_order_events(tx, [_parsed(_placed(sku, 2))])
        free = await caravan.sql(
            "select lot_id from inventory.lots where sku = :s order by lot_id"
            " for update skip locked",
            s=sku,
        )
    assert [r.lot_id for r in free] == sorted(f"{sku}-{suffix}" for suffix in dead)


async def test_reasons_are_told_from_the_lots_no_order_locked(
    caravan: System, uow: UnitOfWork
) -> None:
    """One batch of orders placed on 15 September and on 5 October locks the lots that can
    serve one of those days; a refusal's reason is read of all the SKU's lots. The October
    order for SEPT is out of stock (its October lot is empty; the September lot it locked
    is out of season then), and GONE, whose lots are expired or not on sale yet, is out of
    season on both days."""
    sept, gone = (f"INV-WHY-{name}-{uuid.uuid4().hex[:8]}" for name in ("SEPT", "GONE"))
    await _seed_dated(
        caravan,
        sept,
        {"SEP": (5, "2026-09-01", "2026-09-30"), "OCT": (0, "2026-10-01", "2026-10-31")},
    )
    await _seed_dated(
        caravan,
        gone,
        {"AUG": (10, "2026-08-01", "2026-08-31"), "NOV": (10, "2026-11-01", "2026-11-30")},
    )
    orders = {
        (sku, day): _placed(sku, 1, f"2026-{day}T04:00:00Z")
        for sku in (sept, gone)
        for day in ("09-15", "10-05")
    }
    batch = [_parsed(order) for order in orders.values()]
    answers = {}
    with pytest.raises(_RolledBack):
        async with uow.begin() as tx:
            await handlers.prefetch_order_events(tx, batch)
            for parsed in batch:
                handling = tx.caused_by(parsed.envelope)
                await handlers.on_order_placed(handling, parsed, hold=timedelta(minutes=20))
                (answer,) = handling.emitted
                answers[answer.data["order_id"]] = (answer.type, answer.data.get("reason"))
            raise _RolledBack
    assert {key: answers[order.order_id] for key, order in orders.items()} == {
        (sept, "09-15"): ("stock.reserved", None),
        (sept, "10-05"): ("stock.rejected", "out_of_stock"),
        (gone, "09-15"): ("stock.rejected", "out_of_season"),
        (gone, "10-05"): ("stock.rejected", "out_of_season"),
    }

"""Holds that are never paid for: with payments stopped, a hold expires (``stock.expired``
once, the order ends ``expired``, the stock comes back), and stock released into a lot that
expired meanwhile is recorded as spoiled."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

import caravan.system as system
from shared import days
from shared.events.orders import OrderRequested
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed
from tests.harness import System, ref

BUYER = {"id": "inv-hold-buyer", "phone": "+8613900007011", "locale": "en"}


@pytest.fixture(scope="module")
async def no_payments(caravan: System) -> AsyncIterator[System]:
    """The system with the payments service stopped: no hold is ever paid for."""
    await asyncio.to_thread(caravan.procs.stop, ["payments"])
    try:
        yield caravan
    finally:
        caravan.procs.start(("payments",))
        await asyncio.to_thread(system.wait_ready, caravan.procs)


async def _seed(caravan: System, lots: dict[str, int]) -> str:
    sku = f"INV-HOLD-{uuid.uuid4().hex[:8]}"
    await caravan.seed(
        one_sku_seed(
            sku,
            700,
            {suffix: (quantity, -3, 3 + i) for i, (suffix, quantity) in enumerate(lots.items())},
            [{**BUYER, "credit_limit_fen": 10**9}],
        )
    )
    return sku


async def _hold(caravan: System, sku: str, quantity: int) -> str:
    req = OrderRequested.model_validate(
        {
            "order_ref": ref("INV"),
            "buyer": BUYER,
            "lines": [{"sku": sku, "quantity": quantity}],
            "payment": {"method": "prepaid"},
        }
    )
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id)
    )
    return order_id


async def _counters(caravan: System, sku: str) -> dict[str, tuple[int, ...]]:
    rows = await caravan.sql(
        "select lot_id, available, reserved, sold, spoiled from inventory.lots where sku = :s",
        s=sku,
    )
    return {r.lot_id.removeprefix(f"{sku}-"): tuple(r[1:]) for r in rows}


async def test_stock_released_into_an_expired_lot_is_spoiled(no_payments: System) -> None:
    caravan = no_payments
    sku = await _seed(caravan, {"A": 4, "B": 10})
    order_id = await _hold(caravan, sku, 6)  # 4 from A, 2 from B
    assert await _counters(caravan, sku) == {"A": (0, 4, 0, 0), "B": (8, 2, 0, 0)}
    # Time passes: lot A is past its best_before by the time the buyer cancels.
    yesterday = days.today() - timedelta(days=1)
    assert caravan.engine is not None
    async with caravan.engine.begin() as conn:
        await conn.execute(
            text("update inventory.lots set best_before = :d where lot_id = :l"),
            {"d": yesterday, "l": f"{sku}-A"},
        )
    cancelled = await caravan.client.post(f"/orders/{order_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    released = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id)
    )
    assert (released[0].data["returned"], released[0].data["spoiled"]) == (2, 4)
    assert await _counters(caravan, sku) == {"A": (0, 0, 0, 4), "B": (10, 0, 0, 0)}
    port = caravan.procs.env["CARAVAN_INVENTORY_HTTP_PORT"]
    report = (
        await caravan.client.get(f"http://127.0.0.1:{port}/reports/spoiled", params={"sku": sku})
    ).json()
    assert [(x["lot_id"], x["spoiled"], x["expired_unsold"]) for x in report["lots"]] == [
        (f"{sku}-A", 4, 0)
    ]


async def test_an_unpaid_hold_expires_and_its_stock_comes_back(no_payments: System) -> None:
    caravan = no_payments
    sku = await _seed(caravan, {"A": 3, "B": 5})
    await caravan.restart(("inventory",), CARAVAN_INVENTORY_HOLD_SECONDS="2")
    try:
        order_id = await _hold(caravan, sku, 4)
        assert await _counters(caravan, sku) == {"A": (0, 3, 0, 0), "B": (4, 1, 0, 0)}
        await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.INVENTORY_EVENTS, type="stock.expired", order_id=order_id
            ),
            timeout=20,
        )
        outcome = await caravan.outcome(order_id)
        assert (outcome.type, outcome.data["reason"]) == ("order.cancelled", "expired")
        released = await caravan.wait_for(
            lambda: caravan.log.events(
                Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id
            )
        )
        assert (released[0].data["returned"], released[0].data["spoiled"]) == (4, 0)
        assert await _counters(caravan, sku) == {"A": (3, 0, 0, 0), "B": (5, 0, 0, 0)}
        row = (
            await caravan.sql(
                "select status, expiry_notified_at from inventory.reservations where order_id = :o",
                o=order_id,
            )
        )[0]
        assert row.status == "released" and row.expiry_notified_at is not None
    finally:
        await caravan.restart(("inventory",))
    expired = caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.expired", order_id=order_id)
    assert len(expired) == 1  # reported once, across sweeps and a restart

"""Correcting a lot mistyped when it was received (``PATCH /lots/{id}``, ``caravan inventory
correct-lot``) and reading its history (``GET /lots/{id}/adjustments``, ``caravan inventory
lot``), against the running inventory service. There was neither: a clerk's wrong SKU or
date could only be written off (an adjustment, listed nowhere) and received again."""

import asyncio
import uuid
from datetime import timedelta

from typer.testing import CliRunner

from caravan.inventory_cli import app as inventory_cli
from shared import days
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed
from tests.e2e.test_inventory_admin import _api, _lot
from tests.e2e.test_inventory_holds import place
from tests.e2e.test_listing_pages import every_page
from tests.harness import System

BUYER = {"id": "inv-fix-buyer", "phone": "+8613900007031", "locale": "en"}


async def _products(caravan: System) -> tuple[str, str]:
    """Two SKUs: the one a lot was received as by mistake, and the right one."""
    skus = tuple(f"INV-FIX-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for sku in skus:
        await caravan.seed(one_sku_seed(sku, 100, buyers=[{**BUYER, "credit_limit_fen": 10**9}]))
    return skus[0], skus[1]


def _day(offset: int) -> str:
    return str(days.today() + timedelta(days=offset))


async def test_a_mistyped_lot_is_corrected_and_its_history_lists_it(caravan: System) -> None:
    wrong, right = await _products(caravan)
    lot = f"{wrong}-L1"
    async with caravan.api("inventory") as api:
        assert (await api.post("/lots", json=_lot(lot, wrong, 10, -1, 30))).status_code == 201
        adjusted = await api.post(f"/lots/{lot}/adjustments", json={"delta": -2, "reason": "mould"})
        assert adjusted.status_code == 201, adjusted.text

        fix = {"sku": right, "best_before": _day(20), "reason": "typed the wrong SKU and date"}
        corrected = await api.patch(f"/lots/{lot}", json=fix)
        assert corrected.status_code == 200, corrected.text
        body = corrected.json()
        assert body["corrected"] is True
        assert body["before"] == {"sku": wrong, "best_before": _day(30)}
        assert body["after"] == {"sku": right, "best_before": _day(20)}
        assert (body["lot"]["sku"], body["lot"]["best_before"]) == (right, _day(20))
        assert body["lot"]["available"] == 8  # the counts are the lot's still
        again = await api.patch(f"/lots/{lot}", json=fix)
        assert (again.status_code, again.json()["corrected"]) == (200, False), again.text

        # The right SKU has the lot's stock now, the wrong one none.
        assert (await api.get(f"/stock/{wrong}")).json()["available"] == 0
        moved = (await api.get(f"/stock/{right}")).json()
        assert (moved["available"], [x["lot_id"] for x in moved["lots"]]) == (8, [lot])

        refusals = {
            "dates out of order": ({"available_from": _day(25), "reason": "x"}, 422),
            "unknown SKU": ({"sku": "INV-NO-SUCH-SKU", "reason": "x"}, 422),
            "nothing to correct": ({"reason": "x"}, 422),
            "a term misspelt": ({"best_befor": _day(9), "reason": "x"}, 422),
            "no reason": ({"best_before": _day(9)}, 422),
        }
        for what, (change, status) in refusals.items():
            answer = await api.patch(f"/lots/{lot}", json=change)
            assert answer.status_code == status, (what, answer.text)
        out_of_order = await api.patch(f"/lots/{lot}", json=refusals["dates out of order"][0])
        assert "best_before" in out_of_order.json()["detail"], out_of_order.text
        unknown = await api.patch(f"/lots/{wrong}-NONE", json={"sku": right, "reason": "x"})
        assert unknown.status_code == 404, unknown.text
        assert (await api.get(f"/lots/{wrong}-NONE/adjustments")).status_code == 404

        history = (await api.get(f"/lots/{lot}/adjustments")).json()
        assert history["lot"]["sku"] == right and history["next_cursor"] is None
        entries = history["entries"]
        assert [(e["kind"], e["delta"], e["reason"]) for e in entries] == [
            ("adjustment", -2, "mould"),
            ("correction", None, "typed the wrong SKU and date"),
        ]
        assert entries[1]["before"] == body["before"] and entries[1]["after"] == body["after"]
        pages = await every_page(api, f"/lots/{lot}/adjustments", "entries", limit=1)
        assert [p for page in pages for p in page] == entries and len(pages) == 2
    actor = await caravan.scalar(
        "select actor from auth.audit where action = 'lot.correct' and target = :l", l=lot
    )
    assert actor and [e["actor"] for e in entries] == [actor, actor]
    # The lot is the right SKU's, on its terms: received again so, it is the same lot. So it
    # is on the terms it was received on, as `caravan seed` has it (b6e5d78), left as
    # corrected, where the API answered 409; on terms it never had it is refused, saying how
    # it was corrected.
    async with caravan.api("inventory") as api:
        same = {**_lot(lot, right, 10, -1, 20)}
        assert (await api.post("/lots", json=same)).status_code == 200
        before = await api.post("/lots", json=_lot(lot, wrong, 10, -1, 30))
        assert before.status_code == 200, before.text
        assert (before.json()["sku"], before.json()["best_before"]) == (right, _day(20))
        never = await api.post("/lots", json=_lot(lot, wrong, 10, -1, 20))
        assert never.status_code == 409, never.text
        assert "corrected since it was received, its correction of " in never.json()["detail"]


async def test_the_cli_corrects_a_lot_and_lists_its_history(caravan: System) -> None:
    wrong, right = await _products(caravan)
    lot = f"{wrong}/L2"  # an id holding a slash, as the seed format allows
    url = ["--url", _api(caravan)]
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    added = runner.invoke(
        inventory_cli,
        ["add-lot", lot, wrong, "6", "--from", _day(0), "--best-before", _day(9), *url],
    )
    assert added.exit_code == 0, added.output
    fix = ["correct-lot", lot, "--sku", right, "--from", _day(-1), "--reason", "wrong SKU"]
    corrected = runner.invoke(inventory_cli, [*fix, *url])
    assert corrected.exit_code == 0, corrected.output
    assert f"sku: {wrong} -> {right}" in corrected.output, corrected.output
    assert f"available_from: {_day(0)} -> {_day(-1)}" in corrected.output, corrected.output
    assert f"{lot} ({right}): received 6, available 6" in corrected.output, corrected.output
    again = runner.invoke(inventory_cli, [*fix, *url])
    assert again.exit_code == 0, again.output
    assert again.output.startswith(f"lot {lot} has these terms already, nothing changed")
    adjusted = runner.invoke(
        inventory_cli, ["adjust", lot, "--delta", "-1", "--reason", "bruised", *url]
    )
    assert adjusted.exit_code == 0, adjusted.output

    shown = runner.invoke(inventory_cli, ["lot", lot, *url])
    assert shown.exit_code == 0, shown.output
    assert f"{lot} ({right}): received 5, available 5" in shown.output, shown.output
    lines = shown.output.splitlines()
    correction = next(x for x in lines if "correction" in x)
    assert f"sku {wrong} -> {right}" in correction and "wrong SKU" in correction, shown.output
    adjustment = next(x for x in lines if "adjustment" in x)
    assert "-1" in adjustment and "bruised" in adjustment, shown.output
    assert lines.index(correction) < lines.index(adjustment), shown.output  # oldest first


async def _reserved(caravan: System, order_id: str) -> list[tuple[str, int]]:
    """The lots ``stock.reserved`` of the order says it took from."""
    (event,) = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id)
    )
    return [(t["lot_id"], t["quantity"]) for line in event.data["lines"] for t in line["lots"]]


async def test_a_lot_orders_hold_is_corrected_once_released_and_then_serves_its_sku(
    no_payments: System,
) -> None:
    """While an order holds some of a lot, correcting it would return the hold to another
    SKU (or spoil it by another date): refused 409, saying so. Released, the correction
    goes through, and an order for the right SKU is then served from the lot."""
    caravan = no_payments
    wrong, right = await _products(caravan)
    lot = f"{wrong}-L3"
    async with caravan.api("inventory") as api:
        assert (await api.post("/lots", json=_lot(lot, wrong, 5, -1, 30))).status_code == 201
        held = await place(caravan, wrong, 2, BUYER)
        assert await _reserved(caravan, held) == [(lot, 2)]
        for fix in ({"sku": right}, {"best_before": _day(3)}):
            refused = await api.patch(f"/lots/{lot}", json={**fix, "reason": "typo"})
            assert refused.status_code == 409, refused.text
            assert refused.json()["detail"].startswith(f"lot {lot}: 2 held by orders")
        cancelled = await caravan.client.post(f"/orders/{held}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await caravan.wait_for(
            lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=held)
        )
        corrected = await api.patch(f"/lots/{lot}", json={"sku": right, "reason": "typo"})
        assert corrected.status_code == 200, corrected.text
        served = await place(caravan, right, 4, BUYER)
        assert await _reserved(caravan, served) == [(lot, 4)]
        lot_now = (await api.get(f"/lots/{lot}")).json()
        assert (lot_now["sku"], lot_now["available"], lot_now["reserved"]) == (right, 1, 4)


async def test_a_correction_racing_an_order_for_the_lot_waits_and_sees_its_hold(
    no_payments: System,
) -> None:
    """An order reserving the lot and a correction of its SKU at once: the correction
    checks what orders hold under the lot's lock, the lock the order's reservation takes, so
    it sees the hold and is refused, rather than moving held stock to another SKU. The race
    is made certain: the test holds the lot's row lock while the order, then the correction,
    come to wait for it (the order first), then lets them go."""
    caravan = no_payments
    wrong, right = await _products(caravan)
    lot = f"{wrong}-L4"
    async with caravan.api("inventory") as api:
        assert (await api.post("/lots", json=_lot(lot, wrong, 5, -1, 30))).status_code == 201
        async with caravan.row_locked("inventory.lots", "lot_id", lot) as holder:
            order_id = await place(caravan, wrong, 2, BUYER)
            await caravan.lock_waiters(holder, "the order to wait")
            fix = asyncio.create_task(
                api.patch(f"/lots/{lot}", json={"sku": right, "reason": "typo"})
            )
            await caravan.lock_waiters(holder, "the correction to wait too", 2)
        answer = await fix
    assert await _reserved(caravan, order_id) == [(lot, 2)]
    assert answer.status_code == 409, answer.text
    rows = await caravan.sql("select sku, reserved from inventory.lots where lot_id = :l", l=lot)
    assert [tuple(r) for r in rows] == [(wrong, 2)]

"""Stopping a lot selling so that its holds drain and it can be corrected at peak
(``PUT /lots/{id}/selling``, ``caravan inventory stop-selling`` and ``restart-selling``),
against the running inventory service. A lot whose SKU took orders every few hundred
milliseconds was refused a correction ("N held by orders") nearly every time, and nothing
stopped new holds on it."""

import asyncio
import re
import uuid
from datetime import timedelta

import httpx
from typer.testing import CliRunner

from caravan.inventory_cli import app as inventory_cli
from shared import days
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed
from tests.e2e.test_inventory_admin import _api
from tests.e2e.test_inventory_corrections import BUYER, _reserved
from tests.e2e.test_inventory_holds import place
from tests.harness import System


async def _seed(caravan: System, lots: dict[str, tuple[int, int, int]]) -> str:
    sku = f"INV-STOP-{uuid.uuid4().hex[:8]}"
    await caravan.seed(one_sku_seed(sku, 100, lots, [{**BUYER, "credit_limit_fen": 10**9}]))
    return sku


async def _rejected(caravan: System, order_id: str) -> str:
    """The reason of the order's ``stock.rejected``."""
    (event,) = await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.rejected", order_id=order_id)
    )
    return str(event.data["reason"])


async def _released(caravan: System, order_id: str) -> None:
    cancelled = await caravan.client.post(f"/orders/{order_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await caravan.wait_for(
        lambda: caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released", order_id=order_id)
    )


async def _conserved(caravan: System, sku: str) -> None:
    """Every lot of the SKU keeps ``available + reserved + sold + spoiled == received``."""
    rows = await caravan.sql(
        "select received, available + reserved + sold + spoiled from inventory.lots where sku = :s",
        s=sku,
    )
    assert rows and all(r[0] == r[1] for r in rows), rows


async def test_a_lot_stopped_selling_drains_is_corrected_and_sells_again_once_restarted(
    no_payments: System,
) -> None:
    """Orders pass a stopped lot by for the SKU's other lot, or with none are rejected
    out_of_stock; its hold is released as before, the correction then goes through, and
    restarted the lot serves orders again (first, its best_before being the earlier)."""
    caravan = no_payments
    sku = await _seed(caravan, {"A": (5, -1, 10), "B": (10, -1, 20)})
    lot_a, lot_b = f"{sku}-A", f"{sku}-B"
    async with caravan.api("inventory") as api:
        held = await place(caravan, sku, 2)
        assert await _reserved(caravan, held) == [(lot_a, 2)]
        fix = {"best_before": str(days.today() + timedelta(days=9)), "reason": "typo"}
        refused = await api.patch(f"/lots/{lot_a}", json=fix)
        assert refused.status_code == 409, refused.text
        said = refused.json()["detail"]
        assert f"caravan inventory stop-selling {lot_a}" in said, said
        assert f"PUT /lots/{lot_a}/selling" in said, said

        stop = {"on_sale": False, "reason": "best_before mistyped"}
        stopped = await api.put(f"/lots/{lot_a}/selling", json=stop)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["changed"] is True and stopped.json()["lot"]["on_sale"] is False
        again = await api.put(f"/lots/{lot_a}/selling", json=stop)
        assert (again.status_code, again.json()["changed"]) == (200, False), again.text
        assert (await api.get(f"/stock/{sku}")).json()["sellable"] == 10  # B's only
        unknown = await api.put(f"/lots/{sku}-NONE/selling", json=stop)
        assert unknown.status_code == 404, unknown.text

        passed_by = await place(caravan, sku, 3)
        assert await _reserved(caravan, passed_by) == [(lot_b, 3)]
        still = await api.patch(f"/lots/{lot_a}", json=fix)
        assert still.status_code == 409 and "it is stopped selling" in still.json()["detail"]
        assert (await api.put(f"/lots/{lot_b}/selling", json=stop)).status_code == 200
        none_left = await place(caravan, sku, 1)
        assert await _rejected(caravan, none_left) == "out_of_stock"

        await _released(caravan, held)  # the hold drains: its order ends
        corrected = await api.patch(f"/lots/{lot_a}", json=fix)
        assert corrected.status_code == 200 and corrected.json()["corrected"], corrected.text

        restart = {"on_sale": True, "reason": "corrected"}
        for lot in (lot_a, lot_b):
            restarted = await api.put(f"/lots/{lot}/selling", json=restart)
            assert restarted.status_code == 200 and restarted.json()["changed"], restarted.text
        sold_again = await place(caravan, sku, 4)
        assert await _reserved(caravan, sold_again) == [(lot_a, 4)]

        history = (await api.get(f"/lots/{lot_a}/adjustments")).json()["entries"]
        assert [(e["kind"], e["on_sale"], e["reason"]) for e in history] == [
            ("selling", False, "best_before mistyped"),
            ("correction", None, "typo"),
            ("selling", True, "corrected"),
        ]
    audited = await caravan.sql(
        "select action from auth.audit where target = :l and action like 'lot.%' order by at",
        l=lot_a,
    )
    assert [r.action for r in audited] == [
        "lot.add",  # by caravan seed
        "lot.stop_selling",
        "lot.correct",
        "lot.restart_selling",
    ]
    await _conserved(caravan, sku)


async def test_the_cli_stops_and_restarts_a_lot_selling(caravan: System) -> None:
    sku = await _seed(caravan, {"A": (5, -1, 10)})
    lot = f"{sku}-A"
    url = ["--url", _api(caravan)]
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    stopped = runner.invoke(inventory_cli, ["stop-selling", lot, "--reason", "recount", *url])
    assert stopped.exit_code == 0, stopped.output
    assert f"{lot} ({sku}): received 5" in stopped.output, stopped.output
    assert "in season, stopped selling" in stopped.output, stopped.output
    again = runner.invoke(inventory_cli, ["stop-selling", lot, "--reason", "recount", *url])
    assert again.output.startswith(f"lot {lot} was so already, nothing changed"), again.output
    restarted = runner.invoke(inventory_cli, ["restart-selling", lot, "--reason", "done", *url])
    assert restarted.exit_code == 0 and "stopped selling" not in restarted.output
    shown = runner.invoke(inventory_cli, ["lot", lot, *url])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    stop_line = next(x for x in lines if "selling stopped" in x)
    restart_line = next(x for x in lines if "selling restarted" in x)
    assert "recount" in stop_line and "done" in restart_line, shown.output
    # When, its zone said, as every other table of the command line says a time: the
    # history's times were UTC cut to the second, read in Shawan as 8 hours early.
    assert re.match(r"\S*\d\d:\d\d:\d\d\+00:00 ", stop_line.lstrip("│ ")), stop_line
    assert lines.index(stop_line) < lines.index(restart_line), shown.output


async def _race(caravan: System, lot: str, first: str) -> str:
    """An order for the lot's SKU (2 units) and a stop of the lot, both made to wait for the
    lot's row lock (held by the test), ``first`` ("order" or "stop") queued first; the
    order's id once both went through (the stop answered 200)."""
    sku = lot.removesuffix("-A")
    body = {"on_sale": False, "reason": "correct it"}
    async with caravan.api("inventory") as api:

        async def stop_waits(holder: int, waiting: int) -> asyncio.Task[httpx.Response]:
            stop = asyncio.create_task(api.put(f"/lots/{lot}/selling", json=body))
            await caravan.lock_waiters(holder, "the stop to wait", waiting + 1)
            return stop

        async with caravan.row_locked("inventory.lots", "lot_id", lot) as holder:
            stop = await stop_waits(holder, 0) if first == "stop" else None
            order_id = await place(caravan, sku, 2)
            waiting = 0 if stop is None else 1
            await caravan.lock_waiters(holder, "the order to wait", waiting + 1)
            stop = stop or await stop_waits(holder, 1)
        answer = await stop
    assert answer.status_code == 200, answer.text
    return order_id


async def test_an_order_racing_a_stop_is_either_held_or_passes_the_lot_by(
    no_payments: System,
) -> None:
    """The stop takes the lot's lock, the lock an order's reservation takes. An order queued
    first holds its stock, which the stop then leaves held (a correction is refused while it
    is); queued after the stop, the order's reservation sees the lot stopped once the lock
    is granted and passes it by (the SKU's only lot: out_of_stock). Never a hold the stop
    did not count."""
    caravan = no_payments
    sku = await _seed(caravan, {"A": (5, -1, 10)})
    lot = f"{sku}-A"
    held = await _race(caravan, lot, "order")
    assert await _reserved(caravan, held) == [(lot, 2)]
    async with caravan.api("inventory") as api:
        fix = {"best_before": str(days.today() + timedelta(days=9)), "reason": "typo"}
        refused = await api.patch(f"/lots/{lot}", json=fix)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"].startswith(
            f"lot {lot}: 2 held by orders (see them: caravan inventory holds {lot}, or GET"
            f" /lots/{lot}/holds); it is stopped"
        )
        await _released(caravan, held)
        restart = {"on_sale": True, "reason": "again"}
        assert (await api.put(f"/lots/{lot}/selling", json=restart)).status_code == 200

    passed_by = await _race(caravan, lot, "stop")
    assert await _rejected(caravan, passed_by) == "out_of_stock"
    rows = await caravan.sql(
        "select available, reserved, on_sale from inventory.lots where lot_id = :l", l=lot
    )
    assert [tuple(r) for r in rows] == [(5, 0, False)]
    await _conserved(caravan, sku)


async def test_spoiled_units_held_by_orders_are_refused_saying_so_and_what_to_do(
    no_payments: System,
) -> None:
    """A cold store's fault spoiled more of a lot than was on the shelf, orders holding the
    rest: the write-off was refused "only 3 available, cannot remove 5", nothing said of the
    2 held or how a clerk gets them back. It now says how many are held and how they come
    back, with the lot's selling stopped first (its command), then, stopped, not again; what
    is available is written off, and the rest once the order holding it is cancelled."""
    caravan = no_payments
    sku = await _seed(caravan, {"A": (5, -1, 10)})
    lot = f"{sku}-A"
    spoiled = {"delta": -5, "reason": "cold store 2 fault", "spoiled": True}
    async with caravan.api("inventory") as api:
        held = await place(caravan, sku, 2)
        assert await _reserved(caravan, held) == [(lot, 2)]
        refused = await api.post(f"/lots/{lot}/adjustments", json=spoiled)
        assert refused.status_code == 409, refused.text
        said = refused.json()["detail"]
        assert said.startswith(
            f"lot {lot}: only 3 available, cannot remove 5: 2 more held by orders (see them:"
            f" caravan inventory holds {lot}, or GET /lots/{lot}/holds), each until its order is"
            " paid (then sold) or cancelled (then available again); stop it selling"
            f" (caravan inventory stop-selling {lot}, or PUT /lots/{lot}/selling)"
        ), said
        stop = {"on_sale": False, "reason": "cold store 2 fault"}
        assert (await api.put(f"/lots/{lot}/selling", json=stop)).status_code == 200
        still = await api.post(f"/lots/{lot}/adjustments", json=spoiled)
        assert still.status_code == 409, still.text
        assert (
            "; it is stopped selling: remove what is available now, the rest as the holds"
            in (still.json()["detail"])
        )
        now = await api.post(f"/lots/{lot}/adjustments", json={**spoiled, "delta": -3})
        assert now.status_code == 201, now.text
        await _released(caravan, held)
        rest = await api.post(f"/lots/{lot}/adjustments", json={**spoiled, "delta": -2})
        assert rest.status_code == 201, rest.text
    rows = await caravan.sql(
        "select available, reserved, spoiled from inventory.lots where lot_id = :l", l=lot
    )
    assert [tuple(r) for r in rows] == [(0, 0, 5)]
    await _conserved(caravan, sku)

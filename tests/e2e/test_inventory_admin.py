"""The inventory admin API and ``caravan inventory``, against the running inventory service."""

import asyncio
import uuid
from datetime import timedelta

from typer.testing import CliRunner

from caravan.inventory_cli import app as inventory_cli
from shared import days
from shared.seed import SeedFile
from tests.e2e.inventory_seed import one_sku_seed
from tests.e2e.test_listing_pages import every_page
from tests.e2e.test_ops import cli
from tests.harness import System


def _api(caravan: System) -> str:
    return f"http://127.0.0.1:{caravan.port('inventory')}"


async def _product(caravan: System) -> str:
    sku = f"INV-ADM-{uuid.uuid4().hex[:8]}"
    await caravan.seed(one_sku_seed(sku, 100))
    return sku


def _lot(lot_id: str, sku: str, quantity: int, start: int, end: int) -> dict[str, object]:
    today = days.today()
    return {
        "lot_id": lot_id,
        "sku": sku,
        "quantity": quantity,
        "available_from": str(today + timedelta(days=start)),
        "best_before": str(today + timedelta(days=end)),
    }


async def test_a_lot_id_holding_a_slash_can_be_read_and_adjusted(caravan: System) -> None:
    """A lot id such as ``LOT/2026/01`` is taken (the seed format allows it): its routes
    answered 404 for it, so it could never be read or corrected."""
    sku = await _product(caravan)
    lot = f"LOT/{sku}/01"
    quoted = lot.replace("/", "%2F")
    async with caravan.api("inventory") as api:
        assert (await api.post("/lots", json=_lot(lot, sku, 12, -1, 30))).status_code == 201
        read = await api.get(f"/lots/{quoted}")
        assert (read.status_code, read.json().get("lot_id")) == (200, lot), read.text
        change = {"delta": -2, "reason": "recount"}
        adjusted = await api.post(f"/lots/{quoted}/adjustments", json=change)
        assert adjusted.status_code == 201, adjusted.text
        assert adjusted.json()["lot"]["available"] == 10
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token})
    shown = runner.invoke(inventory_cli, ["lot", lot, "--url", _api(caravan)])
    assert shown.exit_code == 0 and lot in shown.output, shown.output


async def test_an_adjustment_past_what_a_lot_holds_is_a_409_not_a_database_error(
    caravan: System,
) -> None:
    """A lot of 2147483647 units raised by 10^9: a 422 "a value cannot be stored: invalid
    input for query argument $2 ... (value out of int32 range)", now refused as a removal
    of more than is there is."""
    sku = await _product(caravan)
    full = f"{sku}-FULL"
    async with caravan.api("inventory") as api:
        made = await api.post("/lots", json=_lot(full, sku, 2**31 - 1, -1, 30))
        assert made.status_code == 201, made.text
        more = {"delta": 1_000_000_000, "reason": "recount"}
        refused = await api.post(f"/lots/{full}/adjustments", json=more)
        assert refused.status_code == 409, refused.text
        assert "a lot holds at most 2147483647 units" in refused.json()["detail"]
        assert (await api.get(f"/lots/{full}")).json()["received"] == 2**31 - 1


async def test_lots_are_received_adjusted_and_read(caravan: System) -> None:
    sku = await _product(caravan)
    fresh, old = f"{sku}-A", f"{sku}-OLD"
    async with caravan.api("inventory") as api:
        first = await api.post("/lots", json=_lot(fresh, sku, 40, -1, 30))
        assert first.status_code == 201, first.text
        assert first.json()["available"] == 40 and first.json()["in_season"]
        assert (await api.post("/lots", json=_lot(fresh, sku, 40, -1, 30))).status_code == 200
        other = await api.post("/lots", json=_lot(fresh, sku, 41, -1, 30))
        assert other.status_code == 409
        assert other.headers["content-type"] == "application/problem+json"
        unknown = await api.post("/lots", json=_lot(f"{sku}-X", "INV-NO-SUCH-SKU", 1, 0, 1))
        assert unknown.status_code == 422
        assert (await api.post("/lots", json={"lot_id": "x"})).status_code == 422
        assert (await api.post("/lots", json=_lot(old, sku, 7, -30, -1))).status_code == 201

        key = {"Idempotency-Key": f"count-{sku}"}
        found = await api.post(
            f"/lots/{fresh}/adjustments", json={"delta": -5, "reason": "recount"}, headers=key
        )
        assert found.status_code == 201, found.text
        assert found.json()["applied"] is True
        again = await api.post(
            f"/lots/{fresh}/adjustments", json={"delta": -5, "reason": "recount"}, headers=key
        )
        assert (again.status_code, again.json()["applied"]) == (200, False)
        reused = await api.post(
            f"/lots/{fresh}/adjustments", json={"delta": 3, "reason": "recount"}, headers=key
        )
        assert reused.status_code == 409
        # It says what the key was first used for, to tell a mistyped retry from a new one.
        assert reused.json()["detail"] == (
            f"adjustment count-{sku} was made with other values: lot {fresh} adjusted by -5 for"
            " 'recount'; the same values again are that adjustment, applied once, and another"
            " adjustment takes another key"
        ), reused.text
        too_many = await api.post(
            f"/lots/{fresh}/adjustments", json={"delta": -36, "reason": "theft"}
        )
        assert too_many.status_code == 409
        assert (
            await api.post(f"/lots/{sku}-NONE/adjustments", json={"delta": 1, "reason": "x"})
        ).status_code == 404
        assert (
            await api.post(f"/lots/{fresh}/adjustments", json={"delta": 0, "reason": "x"})
        ).status_code == 422

        lot = (await api.get(f"/lots/{fresh}")).json()
        assert {k: lot[k] for k in ("received", "available", "reserved", "sold", "spoiled")} == {
            "received": 35,
            "available": 35,
            "reserved": 0,
            "sold": 0,
            "spoiled": 0,
        }
        # The original lot is still recognised as the same one after the adjustment.
        assert (await api.post("/lots", json=_lot(fresh, sku, 40, -1, 30))).status_code == 200

        stock = (await api.get(f"/stock/{sku}")).json()
        assert (stock["received"], stock["available"], stock["sellable"]) == (42, 42, 35)
        assert stock["expired_unsold"] == 7
        assert [x["lot_id"] for x in stock["lots"]] == [old, fresh]  # serving order
        assert (await api.get("/stock/INV-NO-SUCH-SKU")).status_code == 404
        assert (await api.get(f"/lots/{sku}-NONE")).status_code == 404
        listed = [x for page in await every_page(api, "/stock", "skus") for x in page]
        assert any(x["sku"] == sku and x["available"] == 42 for x in listed)

        report = (await api.get("/reports/spoiled", params={"sku": sku})).json()
        assert [(x["lot_id"], x["spoiled"], x["expired_unsold"]) for x in report["lots"]] == [
            (old, 0, 7)
        ]
        assert report["expired_unsold"] == 7

    assert (
        await caravan.scalar(
            "select count(*) from inventory.lot_adjustments where lot_id = :l", l=fresh
        )
        == 1
    )


async def test_the_cli_reads_and_changes_lots(caravan: System) -> None:
    sku = await _product(caravan)
    url = ["--url", _api(caravan)]
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token})
    today = days.today()
    lot = [
        "add-lot",
        f"{sku}-1",
        sku,
        "12",
        "--from",
        str(today),
        "--best-before",
        str(today + timedelta(days=9)),
        *url,
    ]
    added = runner.invoke(inventory_cli, lot)
    assert added.exit_code == 0, added.output
    assert "received before" not in added.output, added.output
    # Again: the same line, said to be the lot received before (200, not 201).
    again = runner.invoke(inventory_cli, lot)
    assert again.exit_code == 0, again.output
    assert again.output.startswith(f"lot {sku}-1 received before, nothing changed"), again.output
    # A new lot of 0 units is received with the warning a seed gives it; not when again.
    empty = [f"{sku}-0" if a == f"{sku}-1" else "0" if a == "12" else a for a in lot]
    warned = runner.invoke(inventory_cli, empty)
    assert warned.exit_code == 0, warned.output
    assert warned.output.splitlines()[0] == (
        f"warning: lot {sku}-0 will not sell, of quantity 0 (`caravan inventory adjust` gives"
        " units)"
    ), warned.output
    assert "warning" not in runner.invoke(inventory_cli, empty).output
    adjusted = runner.invoke(
        inventory_cli,
        ["adjust", f"{sku}-1", "--delta", "-2", "--reason", "mould", "--key", sku, *url],
    )
    assert adjusted.exit_code == 0, adjusted.output
    shown = runner.invoke(inventory_cli, ["stock", sku, *url])
    assert shown.exit_code == 0, shown.output
    assert f"{sku}: received 10, available 10" in shown.output
    one = runner.invoke(inventory_cli, ["lot", f"{sku}-1", *url])
    assert one.exit_code == 0, one.output
    assert f"{sku}-1 ({sku}): received 10, available 10, reserved 0" in one.output
    # Every SKU whole, though the output (not a terminal) is 80 columns wide.
    every = runner.invoke(inventory_cli, ["stock", *url])
    assert every.exit_code == 0, every.output
    assert sku in every.output and "…" not in every.output, every.output
    report = runner.invoke(inventory_cli, ["spoiled", "--sku", sku, *url])
    assert report.exit_code == 0, report.output
    assert report.output == f"no lot spoiled or expired unsold matches --sku {sku}\n"
    # Refusals are said by main() (on stderr), as the command line runs them.
    backwards = await cli(
        caravan,
        "inventory",
        "add-lot",
        f"{sku}-2",
        sku,
        "5",
        "--from",
        str(today),
        "--best-before",
        "2000-01-01",
        *url,
    )
    assert backwards.returncode == 1, backwards.stderr
    said = f"  lot {sku}-2: --best-before 2000-01-01 is before --from {today}"  # as typed
    assert said in backwards.stderr, backwards.stderr
    missing = await cli(caravan, "inventory", "stock", "INV-NO-SUCH-SKU", *url)
    assert missing.returncode == 1 and "Unknown SKU" in missing.stderr
    # The API names the field in backticks, said as the option typed (it said "delta < 0").
    spoiled = ("adjust", f"{sku}-1", "--delta", "2", "--spoiled", "--reason", "mould")
    refused = await cli(caravan, "inventory", *spoiled, *url)
    said = "Invalid request: spoiled units are written off: --delta < 0"
    assert (refused.returncode, refused.stderr.strip()) == (1, said), refused.stderr


async def test_each_audited_lot_adjustment_starts_from_the_count_it_changed(
    caravan: System,
) -> None:
    """Adjustments of one lot at once: each audit row's *before* plus its delta is its
    *after* (the before was read ahead of the lot's lock)."""
    sku = await _product(caravan)
    lot = f"{sku}-AUDIT"
    async with caravan.api("inventory") as api:
        assert (await api.post("/lots", json=_lot(lot, sku, 100, -1, 30))).status_code == 201
        answers = await asyncio.gather(
            *(
                api.post(f"/lots/{lot}/adjustments", json={"delta": -1, "reason": "recount"})
                for _ in range(12)
            )
        )
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    rows = await caravan.sql(
        "select before, after from auth.audit where action = 'lot.adjust' and target = :l",
        l=lot,
    )
    steps = sorted((r.before["available"], r.after["available"]) for r in rows)
    assert steps == [(89 + n, 88 + n) for n in range(12)]


async def _finished_lots(caravan: System) -> str:
    """A product with a lot in season (A, 10), one expired unsold (OLD, 5), one sold out
    before it expired (DONE, 4) and one spoiled whole (SP, 6)."""
    sku = f"INV-PAGE-{uuid.uuid4().hex[:6]}"
    lots = {"A": (10, -1, 30), "OLD": (5, -20, -2), "DONE": (4, -40, -10), "SP": (6, -30, -5)}
    await caravan.seed(one_sku_seed(sku, 100, lots))
    for lot, moved in (("DONE", "sold"), ("SP", "spoiled")):
        await caravan.execute(
            f"update inventory.lots set {moved} = available, available = 0 where lot_id = :l",
            l=f"{sku}-{lot}",
        )
    return sku


async def test_stock_is_paged_by_sku_and_leaves_out_finished_lots_unless_asked(
    caravan: System,
) -> None:
    """``GET /stock`` answered every product with every lot it ever received (lots are never
    deleted): after a few seasons the answer grew without bound."""
    sku = await _finished_lots(caravan)
    async with caravan.api("inventory") as api:
        one = (await api.get(f"/stock/{sku}")).json()
        counters = ("received", "available", "sold", "spoiled", "sellable", "expired_unsold")
        assert [one[c] for c in counters] == [25, 15, 4, 6, 10, 5]  # over every lot
        assert [x["lot_id"] for x in one["lots"]] == [f"{sku}-OLD", f"{sku}-A"]
        every = (await api.get(f"/stock/{sku}", params={"all": "true"})).json()
        assert [x["lot_id"][len(sku) + 1 :] for x in every["lots"]] == ["DONE", "SP", "OLD", "A"]
        assert [every[c] for c in counters] == [one[c] for c in counters]

        pages = await every_page(api, "/stock", "skus", limit=2)
        assert len(pages) >= 2 and all(len(p) <= 2 for p in pages)
        listed = [s["sku"] for p in pages for s in p]
        products = await caravan.sql("select sku from inventory.products order by sku")
        assert listed == [r.sku for r in products]
        assert [s for p in pages for s in p if s["sku"] == sku] == [one]
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    for flags, shown_lots in (([], ["OLD", "A"]), (["--all"], ["DONE", "SP", "OLD", "A"])):
        shown = runner.invoke(inventory_cli, ["stock", sku, *flags, "--url", _api(caravan)])
        assert shown.exit_code == 0, shown.output
        assert [x for x in ("DONE", "SP", "OLD", "A") if f"{sku}-{x} " in shown.output] == (
            shown_lots
        ), shown.output


async def test_the_spoilage_report_is_paged_by_lot_with_the_whole_reports_totals(
    caravan: System,
) -> None:
    """``GET /reports/spoiled`` answered every spoiled lot ever received at once;
    ``caravan inventory spoiled`` follows its pages to the end."""
    sku = await _finished_lots(caravan)
    await caravan.execute(  # 100 more spoiled lots, for the command's second page
        "insert into inventory.lots (lot_id, sku, received, available, spoiled, available_from,"
        " best_before) select :sku || '-X' || lpad(i::text, 3, '0'), :sku, 1, 0, 1,"
        " current_date - 9, current_date - 8 from generate_series(1, 100) as i",
        sku=sku,
    )
    async with caravan.api("inventory") as api:
        pages = await every_page(api, "/reports/spoiled", "lots", sku=sku, limit=1)
        assert len(pages) == 102 and all(len(p) == 1 for p in pages)
        assert [(x["lot_id"], x["spoiled"], x["expired_unsold"]) for x in pages[0]] == [
            (f"{sku}-OLD", 0, 5)
        ]
        report = (await api.get("/reports/spoiled", params={"sku": sku, "limit": 1})).json()
        assert (report["spoiled"], report["expired_unsold"]) == (106, 5)  # the whole report's
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    shown = runner.invoke(inventory_cli, ["spoiled", "--sku", sku, "--url", _api(caravan)])
    assert shown.exit_code == 0, shown.output
    assert f"{sku}-X100" in shown.output and f"{sku}-SP" in shown.output, shown.output
    assert "spoiled 106, expired unsold 5" in shown.output


async def test_spoiled_units_written_off_are_spoiled_and_reported(caravan: System) -> None:
    """``adjust --delta -20 --spoiled``: the units go from available to spoiled, received
    unchanged, and the spoilage report lists the lot. An adjustment could only lower what
    the lot received ("received 302 ... spoiled 0"), and the report never listed it."""
    sku = await _product(caravan)
    lot = f"{sku}-MOULD"
    counters = ("received", "available", "reserved", "sold", "spoiled")
    async with caravan.api("inventory") as api:
        assert (await api.post("/lots", json=_lot(lot, sku, 322, -1, 30))).status_code == 201
        change = {"delta": -20, "reason": "mould found in 20 sacks", "spoiled": True}
        key = {"Idempotency-Key": f"mould-{sku}"}
        written = await api.post(f"/lots/{lot}/adjustments", json=change, headers=key)
        assert written.status_code == 201, written.text
        after = written.json()["lot"]
        assert [after[c] for c in counters] == [322, 302, 0, 0, 20]
        assert after["received"] == sum(after[c] for c in counters[1:])
        again = await api.post(f"/lots/{lot}/adjustments", json=change, headers=key)
        assert (again.status_code, again.json()["applied"]) == (200, False), again.text
        plain = {"delta": -20, "reason": "mould found in 20 sacks"}
        reused = await api.post(f"/lots/{lot}/adjustments", json=plain, headers=key)
        assert reused.status_code == 409, reused.text  # the key of another adjustment
        refusals = {
            "spoiled units found": ({**change, "delta": 5}, 422),
            "more than available": ({**change, "delta": -303}, 409),
        }
        for what, (body, status) in refusals.items():
            answer = await api.post(f"/lots/{lot}/adjustments", json=body)
            assert answer.status_code == status, (what, answer.text)

        report = (await api.get("/reports/spoiled", params={"sku": sku})).json()
        assert [(x["lot_id"], x["spoiled"]) for x in report["lots"]] == [(lot, 20)]
        assert report["spoiled"] == 20
        stock = (await api.get(f"/stock/{sku}")).json()
        assert [stock[c] for c in counters] == [322, 302, 0, 0, 20]
        (entry,) = (await api.get(f"/lots/{lot}/adjustments")).json()["entries"]
        assert (entry["delta"], entry["spoiled"], entry["reason"]) == (-20, True, change["reason"])
        # Received again as it was received, it is the same lot (the write-off left that).
        assert (await api.post("/lots", json=_lot(lot, sku, 322, -1, 30))).status_code == 200
    audited = await caravan.sql(
        "select detail from auth.audit where action = 'lot.adjust' and target = :l", l=lot
    )
    assert [r.detail["spoiled"] for r in audited] == [True]

    url = ["--url", _api(caravan)]
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    write_off = ["adjust", lot, "--delta", "-2", "--reason", "rot", "--spoiled", *url]
    written_off = runner.invoke(inventory_cli, write_off)
    assert written_off.exit_code == 0, written_off.output
    assert "received 322, available 300, reserved 0, sold 0, spoiled 22" in written_off.output
    shown = runner.invoke(inventory_cli, ["lot", lot, *url])
    assert shown.exit_code == 0, shown.output
    assert "-2 spoiled" in shown.output and "-20 spoiled" in shown.output, shown.output
    report_shown = runner.invoke(inventory_cli, ["spoiled", "--sku", sku, *url])
    assert report_shown.exit_code == 0 and lot in report_shown.output, report_shown.output
    assert "spoiled 22, expired unsold 0" in report_shown.output, report_shown.output


async def test_a_list_of_no_lots_says_so_in_a_line_not_an_empty_table(caravan: System) -> None:
    """A drill's clerk read ``caravan inventory spoiled --sku`` of a SKU with nothing spoiled
    as a table of headers alone, and ``stock SKU`` of one whose lots had all sold out and
    passed their best-before as its counters above an empty table, where every other list
    of nothing says so in one line (docs/commands.md): they now say it, ``stock SKU`` that
    ``--all`` lists the finished lots."""
    sku = f"INV-NONE-{uuid.uuid4().hex[:6]}"
    await caravan.seed(one_sku_seed(sku, 100, {"DONE": (4, -40, -10)}))
    await caravan.execute(
        "update inventory.lots set sold = available, available = 0 where lot_id = :l",
        l=f"{sku}-DONE",
    )
    runner = CliRunner(env={"CARAVAN_TOKEN": caravan.token, "COLUMNS": "200"})
    url = ["--url", _api(caravan)]
    report = runner.invoke(inventory_cli, ["spoiled", "--sku", sku, *url])
    assert report.exit_code == 0, report.output
    assert report.output.splitlines() == [
        f"no lot spoiled or expired unsold matches --sku {sku}",
    ], report.output
    shown = runner.invoke(inventory_cli, ["stock", sku, *url])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[1:] == [
        "no lot of it but finished ones, empty and past best_before (--all lists them)"
    ], shown.output
    every = runner.invoke(inventory_cli, ["stock", sku, "--all", *url])
    assert every.exit_code == 0 and f"{sku}-DONE" in every.output, every.output


async def test_stock_of_one_seller_lists_its_skus_alone(caravan: System) -> None:
    """ "How much of my pepper is left?": a county centre of 426 sellers and 2,130 SKUs found a
    seller's stock only in ``caravan inventory stock``'s every SKU, the seller's SKUs known by
    heart; ``--seller`` (``GET /stock?seller=``) lists that seller's alone, and a seller id
    no seed gave is a 404, not a list of nothing read as a seller with no stock."""
    tag = uuid.uuid4().hex[:6]
    mine, theirs = f"INV-SLR-{tag}-A", f"INV-SLR-{tag}-B"
    seller = {
        "id": f"slr-{tag}",
        "name": "Pepper coop",
        "county": "Shawan",
        "phone": "+86130007002",
    }
    seed = one_sku_seed(mine, 100, {"1": (30, -1, 30)}).model_dump(mode="json")
    other = one_sku_seed(theirs, 100, {"1": (5, -1, 30)}).model_dump(mode="json")
    seed["sellers"].append(seller)
    seed["products"][0]["seller_id"] = seller["id"]
    seed["products"] += other["products"]
    seed["lots"] += other["lots"]
    await caravan.seed(SeedFile.model_validate(seed))
    async with caravan.api("inventory") as api:
        pages = await every_page(api, "/stock", "skus", seller=seller["id"])
        assert [(s["sku"], s["sellable"]) for p in pages for s in p] == [(mine, 30)]
        # The seller's name beside its id (staff know the cooperatives by name, not by id).
        assert (pages[0][0]["seller_id"], pages[0][0]["seller_name"]) == (
            seller["id"],
            "Pepper coop",
        )
        unknown = await api.get("/stock", params={"seller": f"no-{tag}"})
        assert unknown.status_code == 404, unknown.text
    url = ["--url", _api(caravan)]
    shown = await cli(caravan, "inventory", "stock", "--seller", seller["id"], *url)
    assert shown.returncode == 0, shown.stderr
    assert mine in shown.stdout and theirs not in shown.stdout, shown.stdout
    assert shown.stdout.splitlines()[0].strip() == f"seller {seller['id']} (Pepper coop)"
    one = await cli(caravan, "inventory", "stock", mine, *url)
    assert one.stdout.splitlines()[0].endswith(f"; seller {seller['id']} (Pepper coop)"), one
    missing = await cli(caravan, "inventory", "stock", "--seller", f"no-{tag}", *url)
    assert missing.returncode == 1, missing.stdout
    assert f"Unknown seller: no seller no-{tag}" in missing.stderr, missing.stderr


async def test_sellers_are_listed_by_part_of_a_name_or_id_a_page_at_a_time(
    caravan: System,
) -> None:
    """Staff know the cooperatives by name; no route or command listed the sellers, so a
    seller's id was found only in the seed file. ``GET /sellers?q=`` (``caravan inventory
    sellers --q``) lists those whose id or name holds the text, any case, in id order a page
    at a time, each with its county, phone masked and count of SKUs."""
    tag = uuid.uuid4().hex[:6]
    coops = [
        {"id": f"nm-{tag}-{i}", "name": name, "county": "Shawan", "phone": f"+8613000770{i}{i}9"}
        for i, name in enumerate((f"Walnut coop {tag}", f"Honey 100% {tag}", f"Pepper {tag}"))
    ]
    seed = one_sku_seed(f"INV-NM-{tag}", 100, {"1": (5, -1, 30)}).model_dump(mode="json")
    seed["sellers"] += coops
    seed["products"][0]["seller_id"] = coops[0]["id"]
    await caravan.seed(SeedFile.model_validate(seed))
    async with caravan.api("inventory") as api:
        pages = await every_page(api, "/sellers", "sellers", q=tag.upper(), limit=2)
        assert [len(p) for p in pages] == [2, 1], pages
        listed = [s for p in pages for s in p]
        assert listed[0] == {
            "seller_id": coops[0]["id"],
            "name": coops[0]["name"],
            "county": "Shawan",
            "phone": "+86*******0009",
            "skus": 1,
        }, listed
        assert [(s["seller_id"], s["skus"]) for s in listed[1:]] == [
            (coops[1]["id"], 0),
            (coops[2]["id"], 0),
        ]
        # A name's part, any case; "%" is a character of it, not a pattern's wildcard.
        honey = (await api.get("/sellers", params={"q": f"HONEY 100% {tag}"})).json()
        assert [s["seller_id"] for s in honey["sellers"]] == [coops[1]["id"]], honey
        wild = (await api.get("/sellers", params={"q": f"Walnut%{tag}"})).json()
        assert wild == {"sellers": [], "next_cursor": None}, wild
    reader = await caravan.issue_token(f"sellers-{tag}", "inventory:read")
    async with caravan.api("inventory", token=reader) as api:
        assert (await api.get("/sellers", params={"q": tag})).status_code == 200
    credit = await caravan.issue_token(f"sellers-credit-{tag}", "credit:read")
    async with caravan.api("inventory", token=credit) as api:
        assert (await api.get("/sellers")).status_code == 403
    url = ["--url", _api(caravan)]
    shown = await cli(caravan, "inventory", "sellers", "--q", f"pepper {tag}", *url)
    assert shown.returncode == 0, shown.stderr
    assert coops[2]["id"] in shown.stdout and "+86*******0229" in shown.stdout, shown.stdout
    assert coops[0]["id"] not in shown.stdout and "+8613000770229" not in shown.stdout
    none = await cli(caravan, "inventory", "sellers", "--q", f"no-{tag}", *url)
    assert none.stdout.strip() == f"no seller matches --q no-{tag}", none.stdout

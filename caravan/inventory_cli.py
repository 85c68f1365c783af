"""``caravan inventory ...``: stock per SKU and per lot (with its history and the orders
holding it), receiving, adjusting and correcting lots, stopping and restarting their
selling, and the spoilage report, through the inventory service's admin API
(``CARAVAN_INVENTORY_HTTP_PORT``, or ``--url``)."""

import uuid
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from caravan import output
from caravan.admin_api import answer, base_url, call, newest, pages
from caravan.arguments import NegativeNumbers
from caravan.output import OperatorError, console

app = typer.Typer(help="Inventory: harvest lots, stock and spoilage.", no_args_is_help=True)

Url = Annotated[
    str | None, typer.Option("--url", help="inventory admin API (default: from the settings)")
]
COUNTERS = ("received", "available", "reserved", "sold", "spoiled")
HEADS = {
    "received": "recv",
    "available": "avail",
    "reserved": "resv",
    "sold": "sold",
    "spoiled": "spoil",
    "sellable": "sell",
    "expired_unsold": "exp",
}
"""The stock tables' headers: a SKU's whole row fits 80 columns (the full names left the
figures so little room that Rich broke them, "expi red_ unso ld"); ``stock --help`` says them."""


def _base(url: str | None) -> str:
    return base_url(url, "inventory")


def _call(url: str | None, method: str, path: str, *ids: str, **kwargs: Any) -> dict[str, Any]:
    return call(_base(url), "inventory", method, path, *ids, **kwargs)


def _state(lot: dict[str, Any]) -> str:
    state = "expired" if lot["expired"] else "in season" if lot["in_season"] else "not yet"
    return state if lot["on_sale"] else f"{state}, stopped selling"


def _lot_line(lot: dict[str, Any]) -> str:
    """One lot on one line, as one SKU's stock is (a table of one row is mostly headers)."""
    counters = ", ".join(f"{c} {lot[c]}" for c in COUNTERS)
    return (
        f"{lot['lot_id']} ({lot['sku']}): {counters}; "
        f"{_state(lot)}, {lot['available_from']} to {lot['best_before']}"
    )


def _lots_table(lots: list[dict[str, Any]]) -> Table:
    """A SKU's lots (the SKU is said on the line above)."""
    heads = [HEADS[c] for c in COUNTERS]
    table = output.table(
        "lot", *heads, "available_from", "best_before", "state", whole=("lot",), right=heads
    )
    for lot in lots:
        table.add_row(
            lot["lot_id"],
            *(str(lot[c]) for c in COUNTERS),
            lot["available_from"],
            lot["best_before"],
            _state(lot),
        )
    return table


@app.command()
def stock(
    sku: Annotated[str | None, typer.Argument(help="one SKU (with its lots)")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="also the lots that are empty and past best_before")
    ] = False,
    seller: Annotated[
        str | None,
        typer.Option("--seller", help="only this seller's SKUs (its id in the seed file)"),
    ] = None,
    url: Url = None,
) -> None:
    """Stock per SKU: received (recv), available (avail), reserved (resv), sold, spoiled
    (spoil); sellable (sell): available in season; expired unsold (exp): left unsold past
    best_before. Every SKU, one seller's (--seller), or one SKU with its lots."""
    if sku is not None and seller is not None:
        raise output.OperatorError("a SKU or --seller, not both", exit_code=2)
    if sku is not None:
        body = _call(url, "GET", "/stock/{}", sku, params={"all": "true"} if every else None)
        console.print(
            f"{body['sku']}: "
            + ", ".join(f"{c} {body[c]}" for c in (*COUNTERS, "sellable", "expired_unsold"))
            + (f"; seller {seller_of}" if (seller_of := _seller(body)) else "")
        )
        finished = "no lot of it but finished ones, empty and past best_before (--all lists them)"
        output.show(_lots_table(body["lots"]), empty=output.none_of("lot") if every else finished)
        return
    heads = [HEADS[c] for c in (*COUNTERS, "sellable", "expired_unsold")]
    of_seller = {"seller": seller} if seller is not None else None
    listed = [
        s for page in pages(_base(url), "inventory", "/stock", of_seller) for s in page["skus"]
    ]
    # One seller's SKUs: the seller by name beside its id, above them. Every SKU's table has
    # no column of sellers, to fit 80 columns (GET /stock says each SKU's seller).
    named = _seller(listed[0]) if seller is not None and listed else None
    table = output.table(
        "sku", *heads, title=named and f"seller {named}", whole=("sku", *heads), right=heads
    )
    for item in listed:
        table.add_row(
            item["sku"], *(str(item[c]) for c in (*COUNTERS, "sellable", "expired_unsold"))
        )
    output.show(table, empty=output.none_of("SKU", {"--seller": seller}))


def seller_names(seller: str | None = None) -> tuple[dict[str, str], str | None]:
    """Sellers' names by id, read from the inventory API (``GET /sellers``, a page of 100 a
    call: a county's sellers in one) for a command of another service naming them: every
    seller's, or ``seller``'s alone; and None, or why none were read (the API away, the
    token refused), for a line saying it where the names are left out."""
    asked = {"q": seller} if seller is not None else {}
    try:
        listed = [
            s
            for page in pages(_base(None), "inventory", "/sellers", asked)
            for s in page["sellers"]
        ]
    except OperatorError as exc:
        return {}, f"sellers' names left out: {str(exc).splitlines()[0]}"
    return {s["seller_id"]: s["name"] for s in listed}, None


@app.command()
def sellers(
    q: Annotated[
        str | None, typer.Option("--q", help="only sellers whose id or name holds this text")
    ] = None,
    url: Url = None,
) -> None:
    """The sellers (the seed's), in id order: each one's id, name, county, phone (masked)
    and how many products (SKUs) it sells."""
    listed = [
        s
        for page in pages(_base(url), "inventory", "/sellers", {"q": q} if q else {})
        for s in page["sellers"]
    ]
    table = output.table(
        "seller", "name", "county", "phone", "skus", whole=("seller", "phone"), right=("skus",)
    )
    for s in listed:
        table.add_row(s["seller_id"], s["name"], s["county"], s["phone"], str(s["skus"]))
    output.show(table, empty=output.none_of("seller", {"--q": q}))


def _seller(stock: dict[str, Any]) -> str | None:
    """A SKU's seller as staff know it: its id, and its name (the seed's) beside it; None
    from an inventory service of before 2026-12-07, which says neither."""
    if "seller_name" not in stock:
        return None
    return f"{stock['seller_id']} ({stock['seller_name']})"


def _change(entry: dict[str, Any]) -> str:
    """What one entry of a lot's history changed: its count, or its terms."""
    if entry["kind"] == "adjustment":
        return f"{entry['delta']:+d}" + (" spoiled" if entry["spoiled"] else "")
    if entry["kind"] == "selling":
        return "selling restarted" if entry["on_sale"] else "selling stopped"
    return ", ".join(f"{k} {v} -> {entry['after'][k]}" for k, v in entry["before"].items())


@app.command()
def lot(lot_id: str, url: Url = None) -> None:
    """One lot's counters, and its adjustments and corrections (who, when, why); and how many
    of its spoiled units came back from orders' holds after its best-before."""
    path = f"/lots/{quote(lot_id, safe='')}/adjustments"
    history = list(pages(_base(url), "inventory", path))
    counters = history[0]["lot"]
    console.print(_lot_line(counters))
    entries = [e for page in history for e in page["entries"]]
    if entries:
        table = output.table("at", "kind", "change", "reason", "by", whole=("at",))
        for e in entries:
            table.add_row(output.at(e["at"]), e["kind"], _change(e), e["reason"], e["actor"] or "-")
        output.show(table)
    else:
        console.print("no adjustments or corrections")
    # Spoiled: written off (the adjustments above), or held stock released after the lot's
    # best-before (stock.released's "spoiled"), which its history does not list.
    written_off = sum(-e["delta"] for e in entries if e["kind"] == "adjustment" and e["spoiled"])
    if released := counters["spoiled"] - written_off:
        console.print(
            f"{released} spoiled coming back from orders' holds released after its best-before"
            " (orders cancelled or expired: stock.released), not listed one by one"
        )


HELD_AT = "held at\nuntil"


@app.command()
def holds(
    lot_id: str,
    limit: Annotated[int, typer.Option(min=1, help="the oldest this many holds")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the lot, its holds and their totals as JSON")
    ] = False,
    url: Url = None,
) -> None:
    """The orders holding units of a lot now, the oldest hold first: each order, its units,
    since when and until when it holds them (until its order is paid, then sold, or
    cancelled, then back to the lot): whom to call, or which to cancel, before a write-off."""
    path = f"/lots/{quote(lot_id, safe='')}/holds"
    found, more = newest(_base(url), "inventory", path, {}, limit)
    first = _call(url, "GET", "/lots/{}/holds", lot_id, params={"limit": "1"})
    totals = first["totals"]  # of every page, said on each
    if as_json:
        output.as_json({"lot": first["lot"], "holds": found, "more": more, "totals": totals})
        return
    title = f"lot {lot_id}: {totals['held']} held by {totals['orders']} order(s)"
    if more:
        title += f", {output.listed_title(len(found), 'listed', more, 'the oldest')}"
    table = output.table(
        "order", "units", HELD_AT, title=title, whole=("order", HELD_AT), right=("units",)
    )
    for h in found:
        until = output.at(h["held_until"]) if h["held_until"] else "-"
        table.add_row(h["order_id"], str(h["quantity"]), f"{output.at(h['held_at'])}\n{until}")
    output.show(table, empty=output.none_of(f"order holding lot {lot_id}"))


def _days(**given: str | None) -> None:
    """Refuse a day not ``YYYY-MM-DD`` (``--from 2026/12/01``) before the API is called, named
    by its option: the API's refusal named the field it sends (``available_from``), which the
    command has no option of."""
    from pydantic import TypeAdapter, ValidationError

    from shared.api import field_errors
    from shared.seed import Day

    for option, day in ((o, d) for o, d in given.items() if d is not None):
        try:
            TypeAdapter(Day).validate_python(day)
        except ValidationError as exc:
            said = field_errors(exc)[0]["message"]
            raise output.OperatorError(f"--{option.replace('_', '-')}: {said}", 2) from None


@app.command("add-lot", cls=NegativeNumbers)
def add_lot(
    lot_id: str,
    sku: str,
    quantity: Annotated[int, typer.Argument(min=0)],
    available_from: Annotated[str, typer.Option("--from", help="first day on sale (YYYY-MM-DD)")],
    best_before: Annotated[str, typer.Option("--best-before", help="last day (YYYY-MM-DD)")],
    url: Url = None,
) -> None:
    """Receive a harvest lot (receiving the same lot again changes nothing, and says so); a
    new lot of 0 units is received with a warning that it will not sell, as a seed's is."""
    from caravan.seeding import NO_UNITS

    _days(**{"from": available_from, "best_before": best_before})
    body = {
        "lot_id": lot_id,
        "sku": sku,
        "quantity": quantity,
        "available_from": available_from,
        "best_before": best_before,
    }
    status, lot = answer(_base(url), "inventory", "POST", "/lots", json=body)
    if status == 200:  # 201 for a new lot
        console.print(f"lot {lot_id} received before, nothing changed")
    elif quantity == 0:  # not one received before: it may have been given units since
        console.print(f"warning: lot {lot_id} will not sell, {NO_UNITS}", style="yellow")
    console.print(_lot_line(lot))


@app.command("correct-lot")
def correct_lot(
    lot_id: str,
    reason: Annotated[str, typer.Option(help="why: what was mistyped")],
    sku: Annotated[str | None, typer.Option(help="the lot's right SKU")] = None,
    available_from: Annotated[
        str | None, typer.Option("--from", help="its right first day on sale (YYYY-MM-DD)")
    ] = None,
    best_before: Annotated[
        str | None, typer.Option("--best-before", help="its right last day (YYYY-MM-DD)")
    ] = None,
    url: Url = None,
) -> None:
    """Set right a lot's SKU or dates mistyped when it was received (refused while orders
    hold any of it; its SKU, once any was sold). Shown in its history (``lot``)."""
    _days(**{"from": available_from, "best_before": best_before})
    terms = {"sku": sku, "available_from": available_from, "best_before": best_before}
    body = _call(
        url,
        "PATCH",
        "/lots/{}",
        lot_id,
        json={"reason": reason, **{k: v for k, v in terms.items() if v is not None}},
    )
    if not body["corrected"]:
        console.print(f"lot {lot_id} has these terms already, nothing changed")
    for name, was in body["before"].items():
        console.print(f"{name}: {was} -> {body['after'][name]}")
    console.print(_lot_line(body["lot"]))


def _set_selling(lot_id: str, on_sale: bool, reason: str, url: str | None) -> None:
    body = _call(
        url, "PUT", "/lots/{}/selling", lot_id, json={"on_sale": on_sale, "reason": reason}
    )
    if not body["changed"]:
        console.print(f"lot {lot_id} was so already, nothing changed")
    console.print(_lot_line(body["lot"]))


@app.command("stop-selling")
def stop_selling(
    lot_id: str, reason: Annotated[str, typer.Option(help="why")], url: Url = None
) -> None:
    """Stop a lot selling: no new order holds any of it; those that do are sold or released
    as before, so they drain (then `correct-lot` goes through). Shown in its history."""
    _set_selling(lot_id, False, reason, url)


@app.command("restart-selling")
def restart_selling(
    lot_id: str, reason: Annotated[str, typer.Option(help="why")], url: Url = None
) -> None:
    """Restart a lot stopped selling: orders take from it again. Shown in its history."""
    _set_selling(lot_id, True, reason, url)


@app.command()
def adjust(
    lot_id: str,
    delta: Annotated[int, typer.Option(help="units found (+) or lost (-)")],
    reason: Annotated[str, typer.Option(help="why the count changed")],
    key: Annotated[
        str | None, typer.Option(help="idempotency key: the same key is applied once")
    ] = None,
    spoiled: Annotated[
        bool, typer.Option("--spoiled", help="the units lost spoiled: written off as spoiled")
    ] = False,
    url: Url = None,
) -> None:
    """Correct a lot's count (received and available move together), or with --spoiled
    write off spoiled units (available to spoiled, received unchanged: the spoilage report
    lists them)."""
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    body = _call(
        url,
        "POST",
        "/lots/{}/adjustments",
        lot_id,
        json={"delta": delta, "reason": reason, "spoiled": spoiled},
        headers=headers,
    )
    if not body["applied"]:
        console.print(f"adjustment {body['adjustment_id']} was already applied")
    console.print(_lot_line(body["lot"]))


@app.command()
def spoiled(
    sku: Annotated[str | None, typer.Option(help="only this SKU")] = None, url: Url = None
) -> None:
    """Spoiled quantities per lot: returned after expiry, and left unsold past best_before."""
    report = list(pages(_base(url), "inventory", "/reports/spoiled", {"sku": sku} if sku else {}))
    table = output.table(
        "lot",
        "sku",
        "best_before",
        "spoiled",
        "expired_unsold",
        whole=("lot", "sku", "best_before"),
    )
    for item in (x for page in report for x in page["lots"]):
        table.add_row(
            item["lot_id"],
            item["sku"],
            item["best_before"],
            str(item["spoiled"]),
            str(item["expired_unsold"]),
        )
    output.show(table, empty=output.none_of("lot spoiled or expired unsold", {"--sku": sku}))
    body = report[0]  # the totals are the whole report's, on every page
    if not body["lots"]:
        return  # of no lot, 0 and 0: the line above says it (a list of nothing says one)
    console.print(
        f"as of {body['day']}: spoiled {body['spoiled']}, expired unsold {body['expired_unsold']}"
    )

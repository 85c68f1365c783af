"""``caravan inventory ...``: stock per SKU and per lot, receiving and adjusting lots, and the
spoilage report, through the inventory service's admin API (``CARAVAN_INVENTORY_HTTP_PORT``,
or ``--url``)."""

import uuid
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from caravan.admin_api import call
from shared.settings import Settings

app = typer.Typer(help="Inventory: harvest lots, stock and spoilage.", no_args_is_help=True)
console = Console(soft_wrap=True)

Url = Annotated[
    str | None, typer.Option("--url", help="inventory admin API (default: from the settings)")
]
COUNTERS = ("received", "available", "reserved", "sold", "spoiled")


def _base(url: str | None) -> str:
    if url:
        return url
    settings = Settings()
    return f"http://{settings.http_host}:{settings.inventory_http_port}"


def _call(url: str | None, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    return call(_base(url), "inventory", method, path, **kwargs)


def _lots_table(lots: list[dict[str, Any]]) -> Table:
    table = Table("lot", "sku", *COUNTERS, "available_from", "best_before", "state")
    for lot in lots:
        state = "expired" if lot["expired"] else "in season" if lot["in_season"] else "not yet"
        table.add_row(
            lot["lot_id"],
            lot["sku"],
            *(str(lot[c]) for c in COUNTERS),
            lot["available_from"],
            lot["best_before"],
            state,
        )
    return table


@app.command()
def stock(
    sku: Annotated[str | None, typer.Argument(help="one SKU (with its lots)")] = None,
    url: Url = None,
) -> None:
    """Stock per SKU (available, reserved, sold, spoiled; sellable = available in season)."""
    if sku is not None:
        body = _call(url, "GET", f"/stock/{sku}")
        console.print(
            f"{body['sku']}: "
            + ", ".join(f"{c} {body[c]}" for c in (*COUNTERS, "sellable", "expired_unsold"))
        )
        console.print(_lots_table(body["lots"]))
        return
    table = Table("sku", *COUNTERS, "sellable", "expired_unsold")
    for item in _call(url, "GET", "/stock")["skus"]:
        table.add_row(
            item["sku"], *(str(item[c]) for c in (*COUNTERS, "sellable", "expired_unsold"))
        )
    console.print(table)


@app.command()
def lot(lot_id: str, url: Url = None) -> None:
    """One lot's counters."""
    console.print(_lots_table([_call(url, "GET", f"/lots/{lot_id}")]))


@app.command("add-lot")
def add_lot(
    lot_id: str,
    sku: str,
    quantity: int,
    available_from: Annotated[str, typer.Option("--from", help="first day on sale (YYYY-MM-DD)")],
    best_before: Annotated[str, typer.Option("--best-before", help="last day (YYYY-MM-DD)")],
    url: Url = None,
) -> None:
    """Receive a harvest lot (receiving the same lot again changes nothing)."""
    body = {
        "lot_id": lot_id,
        "sku": sku,
        "quantity": quantity,
        "available_from": available_from,
        "best_before": best_before,
    }
    console.print(_lots_table([_call(url, "POST", "/lots", json=body)]))


@app.command()
def adjust(
    lot_id: str,
    delta: Annotated[int, typer.Option(help="units found (+) or lost (-)")],
    reason: Annotated[str, typer.Option(help="why the count changed")],
    key: Annotated[
        str | None, typer.Option(help="idempotency key: the same key is applied once")
    ] = None,
    url: Url = None,
) -> None:
    """Correct a lot's count (received and available move together)."""
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    body = _call(
        url,
        "POST",
        f"/lots/{lot_id}/adjustments",
        json={"delta": delta, "reason": reason},
        headers=headers,
    )
    if not body["applied"]:
        console.print(f"adjustment {body['adjustment_id']} was already applied")
    console.print(_lots_table([body["lot"]]))


@app.command()
def spoiled(
    sku: Annotated[str | None, typer.Option(help="only this SKU")] = None, url: Url = None
) -> None:
    """Spoiled quantities per lot: returned after expiry, and left unsold past best_before."""
    body = _call(url, "GET", "/reports/spoiled", params={"sku": sku} if sku else None)
    table = Table("lot", "sku", "best_before", "spoiled", "expired_unsold")
    for item in body["lots"]:
        table.add_row(
            item["lot_id"],
            item["sku"],
            item["best_before"],
            str(item["spoiled"]),
            str(item["expired_unsold"]),
        )
    console.print(table)
    console.print(
        f"as of {body['day']}: spoiled {body['spoiled']}, expired unsold {body['expired_unsold']}"
    )

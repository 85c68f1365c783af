"""``caravan platform ...``: the mappings of platform SKUs and buyers to ours (a SKU checked
against inventory's catalogue first), pushed orders the platform adapter could not place
(problems), resolving them or fetching them again, and its status callbacks to the
platforms, sent again once failed, through the adapter's admin API
(``CARAVAN_PLATFORM_HTTP_PORT``, or ``--url``)."""

from typing import Annotated, Any, Literal
from urllib.parse import quote

import typer
from rich.table import Table

from caravan import output
from caravan.admin_api import ProblemAnswer, base_url, call, found, pages
from caravan.output import OperatorError, console
from services.platform.domain.retries import CallbackStatus
from shared.events.orders import Locale

app = typer.Typer(
    help="Marketplace platforms: mappings, problems, status callbacks.", no_args_is_help=True
)

Url = Annotated[
    str | None, typer.Option("--url", help="platform adapter API (default: from the settings)")
]
App = Annotated[str | None, typer.Option("--app", help="only this platform app")]
AppName = Annotated[str, typer.Argument(metavar="APP")]


def _base(url: str | None) -> str:
    return base_url(url, "platform")


APP_OPTIONS = {"app": "APP"}
"""The body's name of the commands' ``APP`` (``app_name``), for their errors to say it."""


def _call(url: str | None, method: str, path: str, *ids: str, **kwargs: Any) -> dict[str, Any]:
    return call(_base(url), "platform", method, path, *ids, options=APP_OPTIONS, **kwargs)


def _listed(url: str | None, path: str, name: str, **query: str | None) -> list[dict[str, Any]]:
    """Every row of a paged listing, the filters given (``None``: not given), a refusal
    naming each by its option (``order_id``: ``--order-id``)."""
    params = {k: v for k, v in query.items() if v is not None}
    options = {k: "--" + k.replace("_", "-") for k in query}
    found = pages(_base(url), "platform", path, params, options)
    return [row for page in found for row in page[name]]


Kind = Literal["sku", "buyer"]
UNKNOWN_APP = "Unknown app: "
"""How the adapter's refusal of an app it does not know begins, as said (title: detail)."""
MAPPING = "/platform/{}/mappings/{}/{}"


def put_mapping(
    base: str, app_name: str, kind: Kind, external_id: str, value: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """Map the platform's SKU or buyer ``external_id`` of ``app_name`` to ``value`` (``{"sku"}``,
    or ``{"buyer_id", "phone", "locale"}``), on the adapter at ``base``: the mapping as the
    adapter stored it (a phone as E.164)."""
    return call(base, "platform", "PUT", MAPPING, app_name, kind, external_id, json=value, **kwargs)


def _mapped(kind: str, mapping: dict[str, Any]) -> str:
    """What a mapping maps to: our SKU, or our buyer with the phone and the locale of the
    texts (no phone: each order's from the platform)."""
    if kind == "sku":
        return str(mapping["sku"])
    phone = mapping["phone"] or "the platform's"
    locale = mapping.get("locale") or "the seeded locale, else zh-CN"
    return f"{mapping['buyer_id']} (phone {phone}, {locale})"


def _map(
    url: str | None, app_name: str, kind: Kind, external_id: str, value: dict[str, Any]
) -> str:
    """Map ``external_id`` to ``value``; what was mapped, said. An app the adapter does not
    know (a name mistyped, whose mapping no order would use) is refused as a SKU inventory
    does not have is (exit 2)."""
    try:
        mapped = put_mapping(_base(url), app_name, kind, external_id, value)
    except ProblemAnswer as exc:
        if exc.status == 422 and str(exc).startswith(UNKNOWN_APP):
            raise OperatorError(f"not mapped: {exc}", exit_code=2) from None
        raise
    return f"{app_name}/{kind}/{external_id}: mapped to {_mapped(kind, mapped)}"


ASKED = "admin API (default: from the settings)"
"""The help of the option of a service's API that a mapping's command asks first."""
InventoryUrl = Annotated[str | None, typer.Option("--inventory-url", help=f"inventory {ASKED}")]
PaymentsUrl = Annotated[str | None, typer.Option("--payments-url", help=f"payments {ASKED}")]


def _map_known(
    url: str | None,
    app_name: str,
    kind: Kind,
    external_id: str,
    value: dict[str, Any],
    asked: tuple[str, str | None, str, str],
    unchecked: bool,
    unknown: str,
) -> None:
    """Map ``external_id`` to ``value`` once ``asked`` (a service, its ``--*-url``, the path
    and our id) finds ours, and say what was mapped: one it answers 404 for (a typo) is
    refused, exit 2, nothing written (``not mapped:`` ``unknown``); ``unchecked``: mapped
    without asking, said so."""
    service, service_url, path, ours = asked
    if not unchecked and found(base_url(service_url, service), service, path, ours) is None:
        raise OperatorError(
            f"not mapped: {unknown}; --unchecked maps it all the same, for {_COMING[kind]}",
            exit_code=2,
        )
    said = _map(url, app_name, kind, external_id, value)
    console.print(said + (f", not checked against {service}" if unchecked else ""))


_COMING: dict[Kind, str] = {"sku": "a product being added", "buyer": "a buyer not seeded yet"}
"""What ``--unchecked`` is for, by kind: a mapping made before ours is there."""


@app.command("map-sku")
def map_sku(
    app_name: AppName,
    platform_sku: str,
    sku: Annotated[str, typer.Argument(help="our SKU, which inventory must have")],
    unchecked: Annotated[
        bool, typer.Option("--unchecked", help="map a SKU inventory does not have yet")
    ] = False,
    url: Url = None,
    inventory_url: InventoryUrl = None,
) -> None:
    """Map a platform SKU to ours (audited), once inventory's catalogue has ours: a SKU it
    does not have (a typo) is refused, as each order through it would be cancelled
    unknown_sku; ``--unchecked`` maps one all the same (a product being added)."""
    unknown = (
        f"inventory has no SKU {sku!r}, so each order through it would be cancelled"
        " unknown_sku (a typo? `caravan inventory stock` lists its SKUs)"
    )
    asked = ("inventory", inventory_url, "/stock/{}", sku)
    _map_known(url, app_name, "sku", platform_sku, {"sku": sku}, asked, unchecked, unknown)


@app.command("map-buyer")
def map_buyer(
    app_name: AppName,
    platform_buyer: str,
    buyer_id: Annotated[str, typer.Argument(help="our buyer id")],
    phone: Annotated[
        str | None,
        typer.Option(help="the buyer's number, E.164 or as written (139 1234-5678)"),
    ] = None,
    locale: Annotated[
        Locale | None,
        typer.Option(
            help="the language of those texts; none: the one caravan seed gave the buyer,"
            " else zh-CN"
        ),
    ] = None,
    unchecked: Annotated[
        bool, typer.Option("--unchecked", help="map a buyer not seeded yet (no credit line)")
    ] = False,
    url: Url = None,
    payments_url: PaymentsUrl = None,
) -> None:
    """Map a platform buyer to ours, whole (audited), once payments has the buyer's credit
    line (each seeded buyer's): a buyer it does not know (a typo) is refused, as each order
    through it would be placed for a buyer nobody seeded; ``--unchecked`` maps one all the
    same (a buyer being added). Without ``--phone``, each order's texts go to the phone the
    platform gives with it."""
    unknown = (
        f"payments has no credit line for buyer {buyer_id!r}, which caravan seed gives each"
        " buyer, so their orders would be placed for a buyer nobody seeded (a typo?)"
    )
    body = {"buyer_id": buyer_id, "phone": phone, "locale": locale}
    asked = ("payments", payments_url, "/credit-lines/{}", buyer_id)
    _map_known(url, app_name, "buyer", platform_buyer, body, asked, unchecked, unknown)


@app.command()
def mappings(
    app_name: AppName,
    kind: Annotated[Kind | None, typer.Option(help="only the mappings of this kind")] = None,
    url: Url = None,
) -> None:
    """An app's mappings, by kind and platform id: the SKU or buyer of ours each maps to."""
    path = f"/platform/{quote(app_name, safe='')}/mappings"
    listed = [m for m in _listed(url, path, "mappings") if kind in (None, m["kind"])]
    table = output.table("kind", "platform id", "ours", whole=("kind",))
    for m in listed:
        table.add_row(m["kind"], m["external_id"], _mapped(m["kind"], m))
    output.show(table, empty=output.none_of(f"mapping of {app_name}", {"--kind": kind}))


@app.command()
def unmap(
    app_name: AppName,
    kind: Annotated[Kind, typer.Argument(metavar="sku|buyer")],
    external_id: Annotated[str, typer.Argument(metavar="ID", help="the platform's SKU or buyer")],
    url: Url = None,
) -> None:
    """Remove a mapping (audited): the next orders through it are problems until mapped
    again."""
    target = f"{app_name}/{kind}/{external_id}"
    was = found(_base(url), "platform", MAPPING, app_name, kind, external_id)
    if was is None:
        console.print(f"{target}: no such mapping, nothing changed")
        return
    _call(url, "DELETE", MAPPING, app_name, kind, external_id)
    console.print(f"{target}: unmapped (it mapped to {_mapped(kind, was)})")


ORDER, KIND = "app\nplatform order", "kind\nfirst seen"
"""Two lines each: the problems table fits 80 columns with room for the detail."""


def problems_table(problems: list[dict[str, Any]], full: bool = False) -> Table:
    """Problems, each two lines: app above platform order, kind above first seen (UTC,
    its zone said), the detail in what room is left, cut at a word (``full``: whole, on as
    many lines as it needs); a resolved one's kind says so."""
    table = output.table(ORDER, KIND, "seen", "detail", whole=(ORDER, KIND), right=("seen",))
    for p in problems:
        table.add_row(
            f"{p['app']}\n{p['platform_order_id']}",
            p["kind"]
            + (" (resolved)" if p["resolved_at"] else "")
            + "\n"
            + output.at(p["first_seen_at"]),
            str(p["occurrences"]),
            p["detail"] if full else output.Clipped(p["detail"]),
        )
    return table


@app.command()
def problems(
    app_name: App = None,
    every: Annotated[bool, typer.Option("--all", help="also the resolved ones")] = False,
    full: Annotated[bool, typer.Option("--full", help="each detail whole")] = False,
    url: Url = None,
) -> None:
    """Pushed orders that could not be placed, or that the platform cancelled after we placed
    them: open ones (``--all``: also resolved), the newest first, two lines each, the detail
    cut to fit (``--full``: whole); ``seen``: how many pushes found it."""
    found = _listed(
        url, "/platform/problems", "problems", app=app_name, all="true" if every else None
    )
    what = "problem" if every else "open problem"
    output.show(problems_table(found, full), empty=output.none_of(what, {"--app": app_name}))


@app.command()
def resolve(app_name: AppName, platform_order_id: str, url: Url = None) -> None:
    """Close a pushed order's open problems, once settled by hand (audited). An order the
    adapter has never seen (a typo) is refused (exit 1), as an app unknown is."""
    body = {"app": app_name, "platform_order_id": platform_order_id}
    kinds = _call(url, "POST", "/platform/problems/resolve", json=body)["resolved"]
    target = f"{app_name}/{platform_order_id}"
    if not kinds:
        console.print(f"{target}: no open problem, nothing changed")
        return
    console.print(f"{target}: resolved {', '.join(kinds)}")


@app.command()
def refetch(app_name: AppName, platform_order_id: str, url: Url = None) -> None:
    """Fetch a platform order from its order API and decide on it again, as a push would
    (audited): once a problem is mended (a mapping added), the push that found it being
    answered as it was, ``problem``, if sent again. A ``problem`` names the kinds found."""
    body = {"app": app_name, "platform_order_id": platform_order_id}
    told = _call(url, "POST", "/platform/refetch", json=body)
    kinds = f" ({', '.join(told['problems'])})" if told.get("problems") else ""
    console.print(f"{app_name}/{platform_order_id}: {told['status']}{kinds}")


CALLBACK, SENT = "event\norder\ncreated", "app\nplatform order\noutcome\nstatus, tries"
"""Stacked: the callbacks table fits 80 columns with its two UUIDs whole and room for the
last error."""


def callbacks_table(found: list[dict[str, Any]]) -> Table:
    """Callbacks, each four lines: the event id (what ``retry`` takes) above our order id
    and its creation time (UTC, its zone said), the app above the platform's order, the
    outcome told and the callback's status and attempts, the last error in what room is
    left, cut at a word."""
    table = output.table(CALLBACK, SENT, "last error", whole=(CALLBACK, SENT))
    for c in found:
        table.add_row(
            f"{c['event_id']}\n{c['order_id']}\n{output.at(c['created_at'])}",
            "\n".join(
                (c["app"], c["platform_order_id"], c["outcome"], f"{c['status']}, {c['attempts']}")
            ),
            output.Clipped(c["last_error"] or "", lines=4),
        )
    return table


@app.command()
def callbacks(
    app_name: App = None,
    status: Annotated[
        CallbackStatus | None, typer.Option(help="only the callbacks of this status")
    ] = None,
    order_id: Annotated[
        str | None, typer.Option(help="our order id, a UUID (not the platform's)")
    ] = None,
    platform_order_id: Annotated[str | None, typer.Option(help="the platform's order id")] = None,
    url: Url = None,
) -> None:
    """Status callbacks to the platforms and their attempts, the newest first."""
    found = _listed(
        url,
        "/platform/callbacks",
        "callbacks",
        app=app_name,
        status=status,
        order_id=order_id,
        platform_order_id=platform_order_id,
    )
    given = {
        "--app": app_name,
        "--status": status,
        "--order-id": order_id,
        "--platform-order-id": platform_order_id,
    }
    output.show(callbacks_table(found), empty=output.none_of("callback", given))


@app.command()
def retry(
    event_ids: Annotated[
        list[str] | None,
        typer.Argument(help="failed or pending callbacks' event ids", show_default=False),
    ] = None,
    app_name: App = None,
    url: Url = None,
) -> None:
    """Send failed callbacks again from a first attempt, and pending ones at once (not after
    their backoff), their attempts kept: an app's (``--app``), or the ones named (audited)."""
    if (app_name is None) == (not event_ids):
        raise typer.BadParameter("name either --app or event ids (not both)")
    body = {"app": app_name} if app_name is not None else {"event_ids": event_ids}
    told = _call(url, "POST", "/platform/callbacks/retry", json=body)
    if not told["requeued"]:  # as a list of nothing says it, not counts of 0
        if event_ids:  # every one named left out: a script sees none was sent (as dlq's)
            raise OperatorError(
                f"nothing sent again: no failed or pending callback among the"
                f" {len(event_ids)} named (delivered, being sent, or no such event id:"
                " `caravan platform callbacks` lists them)",
                exit_code=2,
            )
        console.print(f"no failed or pending callback of {app_name}: nothing sent again")
        return
    console.print(  # within 80 columns, counts of three digits each
        f"{told['requeued']} callback(s) sent again: {told['failed']} failed, afresh;"
        f" {told['pending']} pending, now, attempts kept"
    )

"""``caravan platform ...``: pushed orders the platform adapter could not place (problems),
resolving them or fetching them again, and its status callbacks to the platforms, sent again
once failed, through the adapter's admin API (``CARAVAN_PLATFORM_HTTP_PORT``, or ``--url``)."""

from typing import Annotated, Any

import typer
from rich.table import Table

from caravan import output
from caravan.admin_api import base_url, call, pages
from caravan.output import console
from services.platform.domain.delivery import CallbackStatus

app = typer.Typer(
    help="Marketplace platforms: problems of pushed orders, status callbacks.",
    no_args_is_help=True,
)

Url = Annotated[
    str | None, typer.Option("--url", help="platform adapter API (default: from the settings)")
]
App = Annotated[str | None, typer.Option("--app", help="only this platform app")]


def _base(url: str | None) -> str:
    return base_url(url, "platform")


def _call(url: str | None, method: str, path: str, *ids: str, **kwargs: Any) -> dict[str, Any]:
    return call(_base(url), "platform", method, path, *ids, **kwargs)


def _listed(url: str | None, path: str, name: str, **query: str | None) -> list[dict[str, Any]]:
    """Every row of a paged listing, the filters given (``None``: not given)."""
    params = {k: v for k, v in query.items() if v is not None}
    return [row for page in pages(_base(url), "platform", path, params) for row in page[name]]


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
    output.show(problems_table(found, full))


@app.command()
def resolve(
    app_name: Annotated[str, typer.Argument(metavar="APP")], platform_order_id: str, url: Url = None
) -> None:
    """Close a pushed order's open problems, once settled by hand (audited)."""
    body = {"app": app_name, "platform_order_id": platform_order_id}
    kinds = _call(url, "POST", "/platform/problems/resolve", json=body)["resolved"]
    target = f"{app_name}/{platform_order_id}"
    if not kinds:
        console.print(f"{target}: no open problem, nothing changed")
        return
    console.print(f"{target}: resolved {', '.join(kinds)}")


@app.command()
def refetch(
    app_name: Annotated[str, typer.Argument(metavar="APP")], platform_order_id: str, url: Url = None
) -> None:
    """Fetch a platform order from its order API and decide on it again, as a push would
    (audited): once a problem is mended (a mapping added), the push that found it being
    answered ``duplicate`` if sent again."""
    body = {"app": app_name, "platform_order_id": platform_order_id}
    told = _call(url, "POST", "/platform/refetch", json=body)
    console.print(f"{app_name}/{platform_order_id}: {told['status']}")


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
    order_id: Annotated[str | None, typer.Option(help="our order id")] = None,
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
    output.show(callbacks_table(found))


@app.command()
def retry(
    event_ids: Annotated[
        list[str] | None, typer.Argument(help="failed callbacks' event ids", show_default=False)
    ] = None,
    app_name: App = None,
    url: Url = None,
) -> None:
    """Send failed callbacks again from a first attempt: an app's (``--app``), or the ones
    named (audited)."""
    if (app_name is None) == (not event_ids):
        raise typer.BadParameter("name either --app or event ids (not both)")
    body = {"app": app_name} if app_name is not None else {"event_ids": event_ids}
    told = _call(url, "POST", "/platform/callbacks/retry", json=body)
    console.print(f"{told['requeued']} failed callback(s) sent again")

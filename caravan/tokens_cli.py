"""``caravan tokens ...``: issue, bind, revoke and list API tokens, straight in the database
(whoever can reach the database as its owner is the root of trust). Each change is audited."""

import asyncio
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from caravan import output
from caravan.output import console, err_console
from shared.auth.scopes import SCOPES
from shared.settings import DEV_TOKEN_FILE

if TYPE_CHECKING:  # imported by the commands that reach the database, not by every command
    from sqlalchemy.ext.asyncio import AsyncConnection

    from shared.auth.tokens import TokenInfo

app = typer.Typer(help="API tokens: issue, bind, revoke, list.", no_args_is_help=True)
T = TypeVar("T")


def _database_url() -> str:
    from caravan.cli import _database_url as url  # the CLI's one way of finding the database

    return url()


async def _in_tx(database_url: str, work: Callable[["AsyncConnection"], Awaitable[T]]) -> T:
    from shared.db.engine import async_engine

    engine = async_engine(database_url)
    try:
        async with engine.begin() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


async def issue_token(
    database_url: str,
    name: str,
    scopes: list[str],
    sources: list[str] | None = None,
    client: str | None = None,
) -> str:
    """Issue a token (audited as the OS user) and return it; ``sources`` binds it (None:
    unbound, :func:`shared.auth.tokens.check_binding`), as ``client`` does (the client whose
    orders it places and reaches: another token's name, to replace it)."""
    return (await issue_token_with_client(database_url, name, scopes, sources, client))[0]


async def issue_token_with_client(
    database_url: str, name: str, scopes: list[str], sources: list[str] | None, client: str | None
) -> tuple[str, str | None]:
    """:func:`issue_token`'s token, and the client it places as (``client``'s own client,
    where that token replaced another: :func:`shared.auth.tokens.client_of`)."""
    from shared.auth import audit, tokens

    async def work(conn: "AsyncConnection") -> tuple[str, str | None]:
        placer = await tokens.client_of(conn, client)
        token = await tokens.issue(conn, name, scopes, sources, placer)
        after: dict[str, object] = {"name": name, "scopes": sorted(set(scopes))}
        if sources is not None or placer is not None:
            after["sources"] = sorted(set(sources or []))
        if placer is not None:
            after["client"] = placer
        await audit.record(conn, audit.os_actor(), "token.issue", name, after=after)
        return token, placer

    return await _in_tx(database_url, work)


def _host_for_name(host: str) -> str:
    """``host`` as a piece of a token name: each run of characters a name may not hold (a
    Chinese host name, a space) made one ``-``, at most 40 characters, ``host`` if nothing is
    left."""
    from shared.auth.tokens import NAME_CHARS

    kept = re.sub(f"[^{NAME_CHARS}]+", "-", host)[:40].strip("-")
    return kept or "host"


def dev_token(database_url: str, path: Path = DEV_TOKEN_FILE) -> tuple[str, bool]:
    """The development token of this machine: the one in ``path`` if the database knows it,
    else a new one with every scope, written there (mode 0600). True when it is new."""
    from shared.auth import tokens

    if path.is_file():
        token = path.read_text().strip()

        async def known(conn: "AsyncConnection") -> bool:
            return (await tokens.lookup(conn, token)).principal is not None

        if asyncio.run(_in_tx(database_url, known)):
            return token, False
    name = f"dev-{_host_for_name(socket.gethostname())}-{uuid.uuid4().hex[:6]}"
    token = asyncio.run(issue_token(database_url, name, list(SCOPES)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def reach(sources: list[str] | None, client: str | None = None) -> str:
    """Which orders a token reaches, as ``tokens issue`` and ``tokens list`` say it: ``all``
    (unbound), or ``own`` (those it placed over HTTP; ``own as CLIENT``: those placed as
    that client) and its sources."""
    own = "own" if client is None else f"own as {client}"
    return "all" if sources is None else ", ".join([own, *sources])


Source = Annotated[
    list[str] | None,
    typer.Option(
        help="bind the token to the orders of this source (repeatable;"
        " storefront/shawan-center, platform/t-market) besides its own: --own-orders"
    ),
]
OwnOrders = Annotated[
    bool,
    typer.Option(
        "--own-orders",
        help="bind the token to the orders it places over HTTP: it reads and cancels"
        " those (and those of each --source) alone; not with the scopes ops, credit:*,"
        " notifications:* or platform:write, which no binding limits (platform:read, bound,"
        " reads the problems and callbacks of its --source platform/APP alone); nor on a"
        " token holding none of orders:read, orders:write, platform:read (nothing to limit)",
    ),
]
Client = Annotated[
    str | None,
    typer.Option(
        help="bind the token as the client NAME: it places its HTTP orders as NAME and"
        " reaches NAME's, their keys its own (the name of the token it replaces: issue"
        " the new one --client OLD, then revoke OLD)",
    ),
]


def _sources(source: list[str] | None, own_orders: bool, client: str | None) -> list[str] | None:
    """The sources asked for (None: unbound, as neither --own-orders, --source nor --client)."""
    return sorted(set(source or [])) if source or own_orders or client else None


def _audited(token: "TokenInfo") -> dict[str, object]:
    """A token's binding as the audit trail keeps it (``token.bind``, ``token.unbind``)."""
    return {"sources": token.sources, "client": token.client}


@app.command("issue")
def issue(
    scope: Annotated[list[str], typer.Option(help=f"one of: {', '.join(SCOPES)}")],
    name: Annotated[str | None, typer.Option(help="unique name (default: a new one)")] = None,
    source: Source = None,
    own_orders: OwnOrders = False,
    client: Client = None,
) -> None:
    """Issue a token and print it: it is shown this once, only its hash is kept. The token
    alone goes to stdout (``TOKEN=$(caravan tokens issue ...)``), what it is to stderr.
    Unbound (neither --own-orders nor --source), it reaches every order."""
    from shared.auth.tokens import BadToken

    chosen = name or f"token-{uuid.uuid4().hex[:8]}"
    sources = _sources(source, own_orders, client)
    try:
        token, placer = asyncio.run(
            issue_token_with_client(_database_url(), chosen, scope, sources, client)
        )
    except BadToken as exc:
        raise typer.BadParameter(str(exc)) from exc
    bound = "" if sources is None else f"; orders: {reach(sources, placer)}"
    said = f"token {chosen} ({', '.join(sorted(set(scope)))}{bound}), shown once:"
    err_console.print(said, style="dim")
    print(token)


def _rebind(name: str, sources: list[str] | None, client: str | None) -> None:
    """Bind the token ``name`` in place (None, None: unbind it), audited when it changed."""
    from shared.auth import audit, tokens

    async def work(conn: "AsyncConnection") -> "tuple[TokenInfo, TokenInfo]":
        before, after = await tokens.bind(conn, name, sources, client)
        was, now = _audited(before), _audited(after)
        if was != now:
            action = "token.unbind" if after.sources is None else "token.bind"
            await audit.record(conn, audit.os_actor(), action, name, before=was, after=now)
        return before, after

    try:
        before, after = asyncio.run(_in_tx(_database_url(), work))
    except tokens.BadToken as exc:
        raise typer.BadParameter(str(exc)) from exc
    now = reach(after.sources, after.client)
    if _audited(before) == _audited(after):
        console.print(f"token {name}: orders {now} already, nothing changed")
    else:
        done = "unbound" if after.sources is None else "bound"
        was = reach(before.sources, before.client)
        console.print(f"token {name} {done}: orders {now} (were {was}), its secret unchanged")


@app.command("bind")
def bind(
    name: Annotated[str, typer.Argument(help="the token's name")],
    source: Source = None,
    own_orders: OwnOrders = False,
    client: Client = None,
) -> None:
    """Bind a token in place, its secret unchanged, as issue binds one (the same refusals):
    every service honours it within a few seconds (the cache). Its binding becomes what is
    given, not added to what it was. HTTP orders placed before orders migration 0009 (a
    version before 2026-12-06) kept no token: they are out of its reach."""
    sources = _sources(source, own_orders, client)
    if sources is None:
        raise typer.BadParameter(
            "say which orders it reaches: --own-orders, --source S or --client OLD"
            " (caravan tokens unbind NAME: every order)"
        )
    _rebind(name, sources, client)


@app.command("unbind")
def unbind(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Unbind a token in place: it reaches every order again, as one issued unbound."""
    _rebind(name, None, None)


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token: refused by every service within a few seconds (the cache)."""
    from shared.auth import audit, tokens

    async def work(conn: "AsyncConnection") -> "tuple[TokenInfo | None, TokenInfo | None]":
        before = await tokens.info(conn, name)
        done = await tokens.revoke(conn, name)
        if before is not None and done is not None and before.revoked_at is None:
            await audit.record(
                conn,
                audit.os_actor(),
                "token.revoke",
                name,
                before={"revoked_at": None},
                after={"revoked_at": done.revoked_at.isoformat() if done.revoked_at else None},
            )
        return before, done

    before, found = asyncio.run(_in_tx(_database_url(), work))
    if found is None:
        raise typer.BadParameter(f"no token named {name!r}")
    when = output.at(found.revoked_at) if found.revoked_at else "-"  # set by the revoke
    if before is not None and before.revoked_at is not None:
        console.print(f"token {name} was revoked before, at {when}; nothing changed")
    else:
        console.print(f"revoked {name} (at {when})")


@app.command("list")
def list_tokens() -> None:
    """Every token's name, scopes, the orders it reaches and dates (never a secret: none is
    kept)."""
    from shared.auth import tokens

    async def work(conn: "AsyncConnection") -> list["TokenInfo"]:
        return await tokens.listing(conn)

    found = asyncio.run(_in_tx(_database_url(), work))
    table = output.table(
        "name",
        "scopes",
        "orders",
        "created",
        "revoked",
        title=f"{len(found)} token(s)",
        whole=("name", "created", "revoked"),
    )
    for t in found:
        revoked = output.at(t.revoked_at) if t.revoked_at else ""
        scopes = ", ".join(t.scopes)
        orders = reach(t.sources, t.client)
        table.add_row(t.name, scopes, orders, output.at(t.created_at), revoked)
    output.show(table, empty=output.none_of("token"))

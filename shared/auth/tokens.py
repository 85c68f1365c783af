"""API tokens: issued once, stored as their SHA-256, looked up by it, revoked by name.

A token is ``cvn_`` followed by 43 URL-safe characters (256 random bits), so a leaked one
is recognisable in logs and secret scanners, and guessing one is hopeless.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth.scopes import BEYOND_A_BINDING, LIMITED_BY_A_BINDING, ORDERS_SCOPES, SCOPES
from shared.auth.tables import tokens
from shared.events.envelope import check_source
from shared.events.orders import HTTP_SOURCE, PLATFORM_SOURCE_PREFIX, platform_app

PREFIX = "cvn_"
NAME_CHARS = "A-Za-z0-9._:-"  # a regular-expression class's contents
NAME_PATTERN = rf"^[{NAME_CHARS}]{{1,64}}$"


class BadToken(ValueError):
    """A name or a scope that is not allowed."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token belongs to."""

    name: str
    scopes: frozenset[str]
    sources: frozenset[str] | None = None
    """None: the token reaches every order. Else it is bound: it reaches the orders it
    placed over HTTP (``orders.placed_by``) and those of these sources, no other (never
    for a token with ``ops``, which reaches every order: :func:`lookup`)."""
    client: str | None = None
    """The client whose orders it places and reaches as its own (:attr:`placer`), when not
    its own name: a token issued to replace another (``tokens issue --client``)."""

    @property
    def apps(self) -> frozenset[str] | None:
        """The platform apps whose problems and callbacks it reads (``platform:read``): those
        of its sources ``platform/APP`` when bound (a platform's token reads its own app's,
        nothing of another's), every app when not (None)."""
        if self.sources is None:
            return None
        return frozenset(app for s in self.sources if (app := platform_app(s)) is not None)

    @property
    def placer(self) -> str:
        """The name its HTTP orders keep (``orders.placed_by``): its client's, else its own."""
        return self.client or self.name


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    sources: list[str] | None = None  # as :attr:`Principal.sources`
    client: str | None = None  # as :attr:`Principal.client`


@dataclass(frozen=True)
class Lookup:
    """The outcome of looking a presented token up: ``principal`` or why it is refused."""

    principal: Principal | None
    refused: str | None  # "unknown" | "revoked" | "malformed"
    revoked: int | None = field(default=None, compare=False)
    """How many tokens ``auth.tokens`` held revoked when this was read, in the same statement
    (one snapshot); None if it was not read. Tokens are never deleted and a revocation is
    never undone, so a higher number read later means a revocation since
    (:meth:`shared.auth.guard.Guard.lookup`)."""
    name: str | None = field(default=None, compare=False)
    """The name of a revoked token (its refusal's log line names it); None otherwise (a valid
    token's is its principal's)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES.keys())
    if not scopes or unknown:
        said = f"unknown scope(s): {', '.join(unknown)}" if unknown else "no scope given"
        raise BadToken(f"{said} (the scopes: {', '.join(SCOPES)})")
    return sorted(set(scopes))


MAX_SOURCE = 256  # as an event's source (the envelope), and as orders.orders keeps it


def check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise BadToken(f"a token name is 1-64 characters of [{NAME_CHARS}], got {name!r}")


def check_binding(scopes: list[str], sources: list[str] | None) -> list[str] | None:
    """``sources`` as a token keeps them (None: unbound; a list, maybe empty: bound to the
    orders it places over HTTP and those of these sources), or :class:`BadToken`: a source
    no event may carry (the envelope's rule, :func:`~shared.events.envelope.check_source`),
    ``http`` (every HTTP client's orders: a token reaches those it placed itself), or a
    binding of a token with a scope no binding limits (:data:`BEYOND_A_BINDING`: ``ops``
    reaches every order, ``credit:read`` every buyer's payments, whatever it is bound to), or
    of ``platform:read`` to no platform app (it would read nothing: :attr:`Principal.apps`),
    or of a token holding none of :data:`LIMITED_BY_A_BINDING` (it would do nothing)."""
    if sources is None:
        return None
    whys: dict[str, list[str]] = {}  # what a scope held reads beyond a binding: those scopes
    for scope, why in BEYOND_A_BINDING.items():
        if scope in scopes:
            whys.setdefault(why, []).append(scope)
    if whys:
        said = "; with ".join(f"{', '.join(held)} {why}" for why, held in whys.items())
        plural = "s" if sum(map(len, whys.values())) > 1 else ""
        raise BadToken(
            f"a token with the scope{plural} {said}, whatever it is bound to: it cannot be bound"
        )
    if not set(scopes) & set(LIMITED_BY_A_BINDING):
        held = ", ".join(sorted(set(scopes)))
        limited = ", ".join(LIMITED_BY_A_BINDING)
        raise BadToken(
            f"a token with {held} reads no order nor platform app: a binding (which limits"
            f" {limited}) would change nothing; leave it unbound"
        )
    if "platform:read" in scopes and not any(platform_app(s) for s in sources):
        raise BadToken(
            "a token with the scope platform:read, bound, reads the problems and callbacks of"
            f" the platform apps among its sources alone: name one (--source"
            f" {PLATFORM_SOURCE_PREFIX}APP)"
        )
    for source in sources:
        if not 1 <= len(source) <= MAX_SOURCE:
            raise BadToken(f"a source is 1-{MAX_SOURCE} characters, got {len(source)}")
        if source.casefold() == HTTP_SOURCE:
            raise BadToken(
                "source http is every HTTP client's orders: a bound token reaches those it"
                " places itself (--own-orders)"
            )
        try:
            check_source(source)
        except ValueError as exc:
            raise BadToken(f"{exc}, got {source!r}") from None
    return sorted(set(sources))


async def issue(
    conn: AsyncConnection,
    name: str,
    scopes: list[str],
    sources: list[str] | None = None,
    client: str | None = None,
) -> str:
    """Store a new token's hash under ``name`` (unique) and return the token (shown once);
    ``sources`` binds it (:func:`check_binding`), and so does ``client``: it places its HTTP
    orders as that client and reaches that client's (:attr:`Principal.client`)."""
    check_name(name)
    checked = check_scopes(scopes)
    bound = _binding(checked, sources, client)
    client = await client_of(conn, client)
    taken = await conn.scalar(select(tokens.c.name).where(tokens.c.name == name))
    if taken is not None:
        raise BadToken(f"a token named {name!r} exists (revoked ones keep their name)")
    token = new_token()
    await conn.execute(
        insert(tokens).values(
            name=name, hash=digest(token), scopes=checked, sources=bound, client=client
        )
    )
    return token


async def client_of(conn: AsyncConnection, client: str | None) -> str | None:
    """The client a token given ``--client OLD`` places and reaches as: OLD's own client where
    OLD was itself issued to replace another (a second rotation keeps the first client's
    orders), else OLD; :class:`BadToken` where no token, revoked or not, was ever named OLD (a
    misspelt name bound the new token to orders nobody placed, and refused the storefront's
    retries as another client's)."""
    if client is None:
        return None
    found = select(tokens.c.name, tokens.c.client).where(tokens.c.name == client)
    row = (await conn.execute(found)).first()
    if row is None:
        raise BadToken(
            f"no token named {client!r}: --client names the token whose orders this one keeps"
            " (`caravan tokens list`)"
        )
    return str(row.client or row.name)


def _binding(scopes: list[str], sources: list[str] | None, client: str | None) -> list[str] | None:
    """The sources a token of ``scopes`` keeps (:func:`check_binding`): a ``client`` binds it
    even without sources, and is a token's name."""
    if client is not None:
        check_name(client)
        if not set(scopes) & set(ORDERS_SCOPES):
            raise BadToken(
                f"--client places and reads orders as {client}: a token with neither"
                f" {' nor '.join(ORDERS_SCOPES)} places or reads none (bind it without"
                " --client)"
            )
    return check_binding(scopes, [] if sources is None and client is not None else sources)


async def bind(
    conn: AsyncConnection, name: str, sources: list[str] | None, client: str | None = None
) -> tuple[TokenInfo, TokenInfo]:
    """Bind the token ``name`` in place, its secret unchanged, as :func:`issue` binds one
    (the same refusals, against its scopes); ``sources`` and ``client`` both None unbind it.
    The token before and after; :class:`BadToken` if it is unknown or revoked."""
    found = select(tokens).where(tokens.c.name == name).with_for_update()
    row = (await conn.execute(found)).first()
    if row is None:
        raise BadToken(f"no token named {name!r}")
    before = _info(row)
    if before.revoked_at is not None:
        raise BadToken(f"token {name} is revoked: it reaches nothing")
    bound = _binding(before.scopes, sources, client)
    client = await client_of(conn, client)
    await conn.execute(
        update(tokens).where(tokens.c.name == name).values(sources=bound, client=client)
    )
    return before, replace(before, sources=bound, client=client)


async def revoke(conn: AsyncConnection, name: str) -> TokenInfo | None:
    """Revoke the token ``name`` (a second revoke keeps the first time); None if unknown."""
    await conn.execute(
        update(tokens)
        .where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now().astimezone())
    )
    return await info(conn, name)


async def info(conn: AsyncConnection, name: str) -> TokenInfo | None:
    row = (await conn.execute(select(tokens).where(tokens.c.name == name))).first()
    return None if row is None else _info(row)


async def listing(conn: AsyncConnection) -> list[TokenInfo]:
    rows = await conn.execute(select(tokens).order_by(tokens.c.created_at, tokens.c.name))
    return [_info(r) for r in rows]


def _info(row: Any) -> TokenInfo:
    sources = None if row.sources is None else list(row.sources)
    return TokenInfo(
        row.name, list(row.scopes), row.created_at, row.revoked_at, sources, row.client
    )


async def lookup(conn: AsyncConnection, token: str) -> Lookup:
    """The principal of ``token``, or why it is refused, and how many tokens are revoked
    (:attr:`Lookup.revoked`, in one statement: the table holds one row per token an operator
    issued, tens, so counting them is a page or two). The stored hash is compared to the
    presented one in constant time, so timing tells nothing about how much of it matched."""
    if not token.startswith(PREFIX) or len(token) > 128:
        return Lookup(None, "malformed")
    presented = digest(token)
    counted = select(func.count(tokens.c.revoked_at).label("revoked")).subquery()
    row = (
        await conn.execute(
            select(
                counted.c.revoked,
                tokens.c.name,
                tokens.c.hash,
                tokens.c.scopes,
                tokens.c.sources,
                tokens.c.client,
                tokens.c.revoked_at,
            ).select_from(counted.outerjoin(tokens, tokens.c.hash == presented))
        )
    ).one()
    if row.hash is None or not hmac.compare_digest(row.hash, presented):
        return Lookup(None, "unknown", row.revoked)
    if row.revoked_at is not None:
        return Lookup(None, "revoked", row.revoked, row.name)
    scopes = frozenset(row.scopes)
    # ops reaches every order (GET /orders of every buyer): bound, it would not be in effect.
    bound = None if row.sources is None or "ops" in scopes else frozenset(row.sources)
    client = None if bound is None else row.client
    return Lookup(Principal(row.name, scopes, bound, client), None, row.revoked)

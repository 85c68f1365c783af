"""API tokens: issued once, stored as their SHA-256, looked up by it, revoked by name.

A token is ``cvn_`` followed by 43 URL-safe characters (256 random bits), so a leaked one
is recognisable in logs and secret scanners, and guessing one is hopeless.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth.scopes import SCOPES
from shared.auth.tables import tokens

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


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


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


async def issue(conn: AsyncConnection, name: str, scopes: list[str]) -> str:
    """Store a new token's hash under ``name`` (unique) and return the token (shown once)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise BadToken(f"a token name is 1-64 characters of [{NAME_CHARS}], got {name!r}")
    taken = await conn.scalar(select(tokens.c.name).where(tokens.c.name == name))
    if taken is not None:
        raise BadToken(f"a token named {name!r} exists (revoked ones keep their name)")
    token = new_token()
    await conn.execute(
        insert(tokens).values(name=name, hash=digest(token), scopes=check_scopes(scopes))
    )
    return token


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
    return TokenInfo(row.name, list(row.scopes), row.created_at, row.revoked_at)


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
                tokens.c.revoked_at,
            ).select_from(counted.outerjoin(tokens, tokens.c.hash == presented))
        )
    ).one()
    if row.hash is None or not hmac.compare_digest(row.hash, presented):
        return Lookup(None, "unknown", row.revoked)
    if row.revoked_at is not None:
        return Lookup(None, "revoked", row.revoked)
    return Lookup(Principal(row.name, frozenset(row.scopes)), None, row.revoked)

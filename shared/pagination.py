"""Paged listings of the HTTP APIs, one way for all: ``?cursor=&limit=`` in, ``next_cursor`` out.

A listing has a stable order, a key of columns whose last one (or all together) is unique,
read in that order (or its reverse). A cursor names the key of a page's last row, so the
next page starts strictly after it whatever is added meanwhile; ``next_cursor`` is null on
the last page. Cursors are opaque (base64 of the key's values), so a client never builds
one; one this API did not hand out (or one that was tampered with) is a 422. A listing read
newest first (:func:`newest_first`) pages down the reverse of its key.
"""

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy import ColumnElement, Select, tuple_

from shared.db import storable_text

MAX_PAGE = 100
MAX_CURSOR = 2048
"""The longest cursor taken back: the longest key listed (a mapping's kind and platform id of
128 characters, a lot's SKU and id of 64 each) is at most about 1,100 characters encoded,
each character JSON escapes as six (``\u0001``) taking eight of base64."""
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many items")]

Value = datetime | str
Position = tuple[Value, ...]
Shape = tuple[type[datetime] | type[str], ...]
Row = TypeVar("Row")


class BadCursor(ValueError):
    """A cursor this API did not hand out (or one that was tampered with)."""


def encode_cursor(position: Position) -> str:
    raw = orjson.dumps([v.isoformat() if isinstance(v, datetime) else v for v in position])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _value(kind: type[datetime] | type[str], raw: object) -> Value:
    if not storable_text(raw):
        raise ValueError(raw)
    if kind is str:
        return raw
    at = datetime.fromisoformat(raw)
    if at.tzinfo is None:
        raise ValueError(raw)
    at.astimezone(UTC)  # year 1 at +01:00 has none (OverflowError)
    return at


def decode_cursor(cursor: str, shape: Shape) -> Position:
    """The position a cursor names, its values of the kinds ``shape`` says; BadCursor else."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(shape):
            raise ValueError(cursor)
        return tuple(_value(kind, v) for kind, v in zip(shape, raw, strict=True))
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise BadCursor(cursor) from exc


def cursor_after(*shape: type[datetime] | type[str]) -> Any:
    """The dependency of a paged route reading ``?cursor=``: the position it names (None:
    from the start), or a 422 (field ``query.cursor``) for one this API did not hand out."""

    def read(
        cursor: Annotated[
            str | None,
            Query(max_length=MAX_CURSOR, description="the next_cursor of the page before"),
        ] = None,
    ) -> Position | None:
        if cursor is None:
            return None
        try:
            return decode_cursor(cursor, shape)
        except BadCursor:
            error = {
                "loc": ("query", "cursor"),
                "msg": "unknown cursor: not one this API gave",
                "type": "value_error",
            }
            raise RequestValidationError([error]) from None

    return Depends(read)


def after(key: Sequence[Any], position: Position, descending: bool = False) -> ColumnElement[bool]:
    """Rows strictly after ``position`` in the order of ``key`` (or of its reverse)."""
    left, right = tuple_(*key), tuple_(*position)
    return left < right if descending else left > right


def newest_first(
    query: Select[Any], key: Sequence[Any], start: Position | None, limit: int
) -> Select[Any]:
    """``query``'s rows newest first in the order of ``key``, from after ``start``: ``limit``
    of them and one more, for :func:`page` to tell whether there are more."""
    if start is not None:
        query = query.where(after(key, start, descending=True))
    return query.order_by(*(c.desc() for c in key)).limit(limit + 1)


def page(
    rows: Sequence[Row], limit: int, key: Callable[[Row], Position]
) -> tuple[list[Row], str | None]:
    """A page of the ``limit + 1`` rows a query read: the first ``limit``, and the cursor
    after the last of them if there are more (None on the last page)."""
    if len(rows) <= limit:
        return list(rows), None
    return list(rows[:limit]), encode_cursor(key(rows[limit - 1]))

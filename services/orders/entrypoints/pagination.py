"""Opaque cursors of ``GET /orders``: a position in the listing's stable order.

Orders are listed newest first, ties broken by ``order_id``; a cursor names the last order
of a page, so the next page starts strictly after it whatever is placed meanwhile.
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson


class BadCursor(ValueError):
    """A cursor this API did not hand out (or one that was tampered with)."""


@dataclass(frozen=True)
class Position:
    """Where a page ended: the ``placed_at`` and ``order_id`` of its last order."""

    placed_at: datetime
    order_id: str


def encode_cursor(position: Position) -> str:
    raw = orjson.dumps([position.placed_at.isoformat(), position.order_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        placed_at, order_id = orjson.loads(raw)
        position = Position(datetime.fromisoformat(placed_at), order_id)
        position.placed_at.astimezone(UTC)  # year 1 at +01:00 has none (OverflowError)
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise BadCursor(cursor) from exc
    if position.placed_at.tzinfo is None or not isinstance(order_id, str) or "\x00" in order_id:
        raise BadCursor(cursor)
    return position

"""Cursors of ``GET /orders`` (services/orders/entrypoints/pagination.py)."""

import base64
import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders.entrypoints.pagination import (
    BadCursor,
    Position,
    decode_cursor,
    encode_cursor,
)


@given(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
    st.uuids().map(str),
)
def test_a_cursor_gives_back_its_position(placed_at: datetime, order_id: str) -> None:
    position = Position(placed_at, order_id)
    cursor = encode_cursor(position)
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "!!!",
        base64.urlsafe_b64encode(b'["2026-11-30T08:00:00", "x"]').decode(),  # naive time
        base64.urlsafe_b64encode(b'["2026-11-30T08:00:00+00:00"]').decode(),
        base64.urlsafe_b64encode(b'["2026-11-30T08:00:00+00:00", 7]').decode(),
        base64.urlsafe_b64encode(b'["yesterday", "x"]').decode(),
        base64.urlsafe_b64encode(b'["2026-11-30T08:00:00+00:00", "a\\u0000"]').decode(),
    ],
)
def test_a_cursor_this_api_did_not_give_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


@given(st.text(max_size=80))
def test_any_text_is_a_position_or_refused_never_an_error(cursor: str) -> None:
    with contextlib.suppress(BadCursor):
        decode_cursor(cursor)

"""Cursors of the paged listings (shared/pagination.py)."""

import base64
import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pagination import BadCursor, Shape, decode_cursor, encode_cursor

ORDERS: Shape = (datetime, str)  # GET /orders: placed_at, order_id


@given(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
    st.uuids().map(str),
)
def test_a_cursor_gives_back_its_position(placed_at: datetime, order_id: str) -> None:
    position = (placed_at, order_id)
    cursor = encode_cursor(position)
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor, ORDERS) == position


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
        base64.urlsafe_b64encode(b'["2026-11-30T08:00:00+00:00", "x", "y"]').decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        encode_cursor(("sku-1",)),  # another listing's
    ],
)
def test_a_cursor_this_api_did_not_give_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor, ORDERS)


@given(st.text(max_size=80))
def test_any_text_is_a_position_or_refused_never_an_error(cursor: str) -> None:
    with contextlib.suppress(BadCursor):
        decode_cursor(cursor, ORDERS)

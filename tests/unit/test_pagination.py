"""Cursors of the paged listings (shared/pagination.py)."""

import asyncio
import base64
import contextlib
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import example, given
from hypothesis import strategies as st

from shared.pagination import BadCursor, Shape, cursor_after, decode_cursor, encode_cursor

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


STORABLE = st.characters(codec="utf-8", exclude_characters="\x00")  # what PostgreSQL holds


@given(st.text(STORABLE, max_size=64), st.text(STORABLE, max_size=64))
@example("\x01" * 64, "货" * 64)  # about the longest: 1,040 characters encoded
def test_every_cursor_handed_out_is_taken_back(kind: str, external_id: str) -> None:
    """A page ending on a platform buyer's nickname of 128 characters (control characters
    escape to six in JSON): its next_cursor of 526 characters and more was refused 422
    "unknown cursor" (the route took 512)."""
    app = FastAPI()

    @app.get("/listing")
    def listing(start: tuple[str, ...] | None = cursor_after(str, str)) -> list[str]:
        return list(start or ())

    position = (kind, external_id * 2)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/listing", params={"cursor": encode_cursor(position)})

    answer = asyncio.run(ask())
    assert answer.status_code == 200, answer.text
    assert tuple(answer.json()) == position

"""The ids Caravan mints for what it keeps: events, orders, loans, texts, stock adjustments."""

import uuid

import uuid_utils


def new_id() -> str:
    """A new UUID as text, of version 7: its first 48 bits are the time in milliseconds and
    the rest random, so ids minted one after another sort one after another.

    Every key these ids end up in (an order's, a loan's, a text's, and each inbox's, keyed by
    event id) then receives new entries at its right-hand end, in pages already in memory.
    Random ids (version 4) land anywhere in an index that, after days of orders, is larger than
    PostgreSQL's buffers, so each insert reads a page of its own from outside them.
    """
    return str(uuid_utils.uuid7())


def as_stored(given: str) -> str | None:
    """``given`` as these ids are kept (a hyphenated UUID in lower case: a client may send
    it in upper case), or None if it is not such a UUID."""
    try:
        stored = str(uuid.UUID(given))
    except ValueError:
        return None
    return stored if stored == given.lower() else None

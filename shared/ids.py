"""The ids Caravan mints for what it keeps: events, orders, loans, texts, stock adjustments."""

import hashlib
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


_ANSWERS = uuid.UUID("5b0c6f4e-2d1a-5e8b-9c3f-7a4d2e1b0c99")


def answer_id(kind: str, source: str, cause_id: str, content: bytes) -> str:
    """The id of the ``kind`` of answer to the event ``source``/``cause_id`` of ``content``: a
    UUID of version 5, the same whenever that very event is answered again (a producer's
    retry of it at another offset, a redrive of its dead letter), so that readers deduplicate
    the answers by (source, id) as they do every event; another content under the same id (a
    letter mended before its redrive) is answered anew."""
    digest = hashlib.sha256(content).hexdigest()
    return str(uuid.uuid5(_ANSWERS, f"{kind}|{source}|{cause_id}|{digest}"))


def as_stored(given: str) -> str | None:
    """``given`` as these ids are kept (a hyphenated UUID in lower case: a client may send
    it in upper case), or None if it is not such a UUID."""
    try:
        stored = str(uuid.UUID(given))
    except ValueError:
        return None
    return stored if stored == given.lower() else None

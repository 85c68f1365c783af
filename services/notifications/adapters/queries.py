"""Read models of the texts (served by the API's ``GET /sms``): an order's, or those to one
phone, newest first, each with its recipient masked as the logs mask it, and any number in
the gateway's last error too (a gateway's refusal may quote the number it refused)."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifications.adapters.tables import sms
from shared.events.envelope import Frozen
from shared.logs import masked, phones_masked
from shared.pagination import Position, newest_first


class Text(Frozen):
    """One text as an operator reads it: whom (masked), which template (``purpose``) in which
    language, when it was queued (``created_at``), first allowed to go (``not_before``: the
    end of quiet hours), sent, delivered, failed (``failed_at``: null on one failed before
    notifications 0013), or when it is tried next (``next_attempt_at``, while pending), the
    gateway's attempts and the last error they met (a failed one's reason)."""

    sms_id: str
    order_id: str | None
    to: str
    purpose: str
    locale: str
    status: str
    attempts: int
    created_at: datetime
    not_before: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    segments: int
    text: str


class Texts(Frozen):
    """A page of texts, newest first (``next_cursor``: the rest)."""

    items: list[Text]
    next_cursor: str | None = None


WAITING = ("pending", "sending")
"""The statuses of a text still to go, whose ``next_attempt_at`` is its next try (of one
sent or given up, a time that says nothing)."""
KEY = (sms.c.created_at, sms.c.sms_id)
"""The order of a listing, newest first, and of its cursor: the indexes ``sms_order`` and
``sms_to`` (notifications migration 0012) hold it after the order id or the number."""


async def texts(
    conn: AsyncConnection,
    *,
    order_id: str | None,
    phone: str | None,
    start: Position | None,
    limit: int,
) -> list[Text]:
    """The texts of ``order_id`` and/or to ``phone``, newest first, from after ``start``:
    ``limit`` of them and one more (:func:`shared.pagination.page`)."""
    query = select(*(sms.c[name] for name in Text.model_fields))
    if order_id is not None:
        query = query.where(sms.c.order_id == order_id)
    if phone is not None:
        query = query.where(sms.c.to == phone)
    rows = (await conn.execute(newest_first(query, KEY, start, limit))).all()
    return [
        Text.model_validate(
            {
                **r._mapping,
                "to": masked(r.to),
                "last_error": phones_masked(r.last_error) if r.last_error else r.last_error,
                "next_attempt_at": r.next_attempt_at if r.status in WAITING else None,
            }
        )
        for r in rows
    ]

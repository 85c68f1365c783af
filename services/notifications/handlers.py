"""Use cases of the notifications service.

Handlers only decide what to send: they write an SMS row, unique per (event, recipient,
purpose), in the handling transaction. The dispatcher sends pending rows through the
gateway and records ``sms.sent`` in the outbox, so a message is never lost nor doubled.
"""

import logging
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.notifications.adapters.gateway import OutgoingSms, SmsGateway
from services.notifications.adapters.tables import recipients, sms
from services.notifications.domain.sms import encode_info
from services.notifications.domain.templates import (
    pick_locale,
    render_order_cancelled,
    render_order_confirmed,
)
from shared.events.notifications import SmsSent
from shared.events.orders import OrderCancelled, OrderConfirmed, OrderPlaced
from shared.events.registry import Parsed
from shared.messaging.uow import Tx

log = logging.getLogger(__name__)


async def on_order_placed(tx: Tx, parsed: Parsed) -> None:
    data = parsed.data
    assert isinstance(data, OrderPlaced)
    if data.buyer is None:
        return
    values = {"order_ref": data.order_ref, "phone": data.buyer.phone, "locale": data.buyer.locale}
    await tx.conn.execute(
        pg_insert(recipients).values(order_id=data.order_id, **values).on_conflict_do_nothing()
    )


async def _queue(tx: Tx, parsed: Parsed, order_id: str, purpose: str, text_for: object) -> None:
    row = (
        await tx.conn.execute(select(recipients).where(recipients.c.order_id == order_id))
    ).first()
    if row is None:
        log.warning("no recipient known for order %s; %s not sent", order_id, purpose)
        return
    locale = pick_locale(row.locale)
    assert callable(text_for)
    body: str = text_for(locale, row.order_ref)
    info = encode_info(body)
    await tx.conn.execute(
        pg_insert(sms)
        .values(
            sms_id=str(uuid.uuid4()),
            dedup_key=f"{parsed.envelope.id}|{row.phone}|{purpose}",
            purpose=purpose,
            to=row.phone,
            locale=locale,
            text=body,
            encoding=info.encoding,
            segments=info.segments,
            order_id=order_id,
            status="pending",
        )
        .on_conflict_do_nothing(index_elements=["dedup_key"])
    )


async def on_order_confirmed(tx: Tx, parsed: Parsed) -> None:
    d = parsed.data
    assert isinstance(d, OrderConfirmed)
    await _queue(
        tx,
        parsed,
        d.order_id,
        "order_confirmed",
        lambda loc, ref: render_order_confirmed(
            loc, ref, d.total_fen, d.payment.method, d.term_months
        ),
    )


async def on_order_cancelled(tx: Tx, parsed: Parsed) -> None:
    d = parsed.data
    assert isinstance(d, OrderCancelled)
    await _queue(
        tx,
        parsed,
        d.order_id,
        "order_cancelled",
        lambda loc, ref: render_order_cancelled(loc, ref, d.reason),
    )


async def dispatch_pending(tx: Tx, gateway: SmsGateway, limit: int = 50) -> int:
    """Send up to ``limit`` pending SMS; each becomes ``sent`` with an ``sms.sent`` event."""
    rows = (
        await tx.conn.execute(
            select(sms)
            .where(sms.c.status == "pending")
            .order_by(sms.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in rows:
        await gateway.send(OutgoingSms(dedup_key=row.dedup_key, to=row.to, text=row.text))
        await tx.conn.execute(
            update(sms)
            .where(sms.c.sms_id == row.sms_id)
            .values(status="sent", attempts=sms.c.attempts + 1, sent_at=func.now())
        )
        await tx.emit(
            SmsSent(
                sms_id=row.sms_id,
                to=row.to,
                locale=pick_locale(row.locale),
                text=row.text,
                encoding=row.encoding,
                segments=row.segments,
                order_id=row.order_id,
                purpose=row.purpose,
            ),
            correlation_id=row.order_id,
        )
    return len(rows)

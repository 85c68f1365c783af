"""Use cases of the notifications service: deciding what to send.

Handlers never talk to the gateway. They write an SMS row in the handling transaction (at
its commit, with the batch's other rows), one per (event, recipient, purpose): the
``dedup_key`` column is unique and every insert is ``ON CONFLICT DO NOTHING``, so a
redelivered or replayed event (already stopped by the inbox) or a second path to the same
message (seller texts, below) can never queue it twice. The dispatcher
(:mod:`services.notifications.dispatch`) sends what is queued.

Seller texts need two facts from two topics: which sellers an order concerns
(``stock.reserved``) and that it was confirmed (``order.confirmed``). Either may be handled
first, by any instance, so both handlers take the same per-order advisory lock; whichever
comes second queues the texts, keyed by the ``order.confirmed`` event id.

What the handlers read (recipients, confirmations, sellers, product names, opt-outs) goes
through the transaction's identity map, which :func:`prefetch` fills for a whole batch of
order and inventory events in a few statements, after locking its orders.

A confirmation or a cancellation that comes before its ``order.placed`` (which a redrive, a
replay or partitions added can make happen) has no one to text yet: it is parked
(:mod:`shared.messaging.parking`) and handled again when ``order.placed`` comes; so is a
loan's event (an instalment's reminder, a repayment, a void, a refund): its text waits for
the buyer, and a void or a last repayment marks the recipient that ``order.placed`` writes.
"""

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import ColumnElement, bindparam, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.notifications.adapters.tables import (
    buyers,
    confirmed_orders,
    opt_outs,
    order_sellers,
    parked,
    products,
    recipients,
    sellers,
    sms,
)
from services.notifications.dispatch import failed_now
from services.notifications.domain.delivery import (
    REFUND_PAID,
    REMINDER_PURPOSES,
    QuietHours,
    reminder_key,
    reminder_of,
    reminder_prefix,
    stage_passed,
)
from services.notifications.domain.phones import phone_problem, zone_of
from services.notifications.domain.sms import encode_info
from services.notifications.domain.templates import (
    DEFAULT_LOCALE,
    InstalmentStage,
    pick_locale,
    product_name,
    render_instalment,
    render_new_order_for_seller,
    render_order_cancelled,
    render_order_confirmed,
    render_refund_paid,
    signed,
)
from shared import days
from shared.db import driver
from shared.events.inventory import StockReserved
from shared.events.notifications import SmsFailed
from shared.events.orders import Locale, OrderCancelled, OrderConfirmed, OrderPlaced
from shared.events.payments import InstalmentDue, PaymentRefunded, PaymentRepaid, PaymentVoided
from shared.events.registry import Parsed
from shared.ids import new_id
from shared.logs import masked
from shared.messaging.consumer import Handler
from shared.messaging.parking import OrderLocks, Parking
from shared.messaging.uow import Tx
from shared.seed import Loaded, SeedFile
from shared.telemetry import current_trace_headers
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)

_LOCKS = OrderLocks(0x5A5)  # the notifications service's advisory lock of each order
_LOAN_EVENTS = (InstalmentDue, PaymentRepaid, PaymentVoided, PaymentRefunded)
_PARKING = Parking(parked)

SMS_QUEUED = "notifications.sms"
"""Signal of a transaction that queued an SMS to send now (it wakes the dispatcher)."""
NO_LOAN_LEFT = "no loan left to remind of: voided, repaid, or the order ended without one"
"""Why a reminder handled once nothing is to remind its buyer of is kept unsent."""
BUYER_GONE = (
    "its order.placed was handled long ago (its order.confirmed acted on), and no buyer is"
    " kept: deleted by retention since, or none named"
)
"""Why a loan's event of an order with no buyer kept is not parked for its ``order.placed``."""

# Kinds of rows in the transaction's identity map (Tx.identity).
RECIPIENT, CONFIRMED, SELLERS, CONTACT, NAMES, OPTED_OUT, SEEDED, ENDED = (
    "notifications.recipient",
    "notifications.confirmed",
    "notifications.sellers",
    "notifications.contact",
    "notifications.names",
    "notifications.opted_out",
    "notifications.seeded",  # a buyer's locale, as a seed file gave it
    "notifications.ended",  # an order nothing_to_text marked in this transaction
)


@dataclass(frozen=True)
class Recipient:
    """The buyer of an order, as ``order.placed`` told us; ``done``: nothing is to remind
    them of any more (:func:`nothing_to_text`)."""

    order_id: str
    order_ref: str
    phone: str
    locale: str
    lines: list[dict[str, Any]]
    done: bool = False


@dataclass(frozen=True)
class Confirmation:
    event_id: str
    order_ref: str


@dataclass(frozen=True)
class SellerShare:
    """A seller's lines of an order, and how to reach the seller (``phone`` None: unknown)."""

    seller_id: str
    lines: list[dict[str, Any]]
    phone: str | None
    locale: str | None


# The statements that load a batch's rows run on the driver (driver.fetch).
_RECIPIENTS = select(recipients).where(driver.any_of(recipients.c.order_id))
_CONFIRMATIONS = select(confirmed_orders).where(driver.any_of(confirmed_orders.c.order_id))
_SELLERS = (
    select(order_sellers, sellers.c.phone, sellers.c.locale)
    .join(sellers, sellers.c.seller_id == order_sellers.c.seller_id, isouter=True)
    .where(driver.any_of(order_sellers.c.order_id))
    .order_by(order_sellers.c.order_id, order_sellers.c.seller_id)
)
_CONTACTS = select(sellers).where(driver.any_of(sellers.c.seller_id))
_NAMES = select(products).where(driver.any_of(products.c.sku))
_OPT_OUTS = select(opt_outs.c.phone).where(driver.any_of(opt_outs.c.phone))
_SEEDED = select(buyers).where(driver.any_of(buyers.c.buyer_id))


async def _load_recipients(tx: Tx, order_ids: Iterable[str]) -> None:
    todo = tx.unknown(RECIPIENT, order_ids)
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _RECIPIENTS, keys=todo)
    found = [
        Recipient(
            r.order_id,
            r.order_ref,
            r.phone,
            r.locale,
            r.lines or [],
            r.done_at is not None or (ENDED, r.order_id) in tx.identity,
        )
        for r in rows
    ]
    tx.remember(RECIPIENT, todo, {r.order_id: r for r in found})


async def _load_confirmations(tx: Tx, order_ids: Iterable[str]) -> None:
    todo = tx.unknown(CONFIRMED, order_ids)
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _CONFIRMATIONS, keys=todo)
    found = {r.order_id: Confirmation(r.event_id, r.order_ref) for r in rows}
    tx.remember(CONFIRMED, todo, found)


async def _load_sellers(tx: Tx, order_ids: Iterable[str]) -> None:
    todo = tx.unknown(SELLERS, order_ids)
    if not todo:
        return
    found: dict[str, list[SellerShare]] = {order_id: [] for order_id in todo}
    for r in await driver.fetch(tx.conn, _SELLERS, keys=todo):
        found[r.order_id].append(SellerShare(r.seller_id, r.lines, r.phone, r.locale))
    tx.remember(SELLERS, todo, found)


async def _load_contacts(tx: Tx, seller_ids: Iterable[str]) -> None:
    """The (phone, locale) of these sellers; None for a seller not known."""
    todo = tx.unknown(CONTACT, seller_ids)
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _CONTACTS, keys=todo)
    tx.remember(CONTACT, todo, {r.seller_id: (r.phone, r.locale) for r in rows})


async def _load_names(tx: Tx, skus: Iterable[str]) -> None:
    todo = tx.unknown(NAMES, skus)
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _NAMES, keys=todo)
    tx.remember(NAMES, todo, {r.sku: r.names for r in rows})


async def _load_opt_outs(tx: Tx, phones: Iterable[str]) -> None:
    todo = tx.unknown(OPTED_OUT, phones)
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _OPT_OUTS, keys=todo)
    tx.remember(OPTED_OUT, todo, {r.phone: True for r in rows})


async def _load_seeded(tx: Tx, placed: Iterable[OrderPlaced]) -> None:
    """The locales a seed gave the buyers of these orders that leave theirs out."""
    todo = tx.unknown(SEEDED, (p.buyer.id for p in placed if p.buyer and not p.buyer.locale))
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _SEEDED, keys=todo)
    tx.remember(SEEDED, todo, {r.buyer_id: r.locale for r in rows})


async def prefetch(tx: Tx, batch: Sequence[Parsed]) -> None:
    """Lock the batch's orders (in one statement, so in one order), take the events parked
    for those placed, then read what its handlers will need. Order, inventory and payment
    events share it: a batch brings them together, and handles its order events first. A
    loan's event parks or marks under its order's lock (:func:`_buyer_or_park`): taken here
    with the others', not one by one as each handler comes to it, so that two batches of one
    order's events (two instances, each reading one of the topics) never each hold a lock
    the other waits for (a deadlock, which PostgreSQL ends by undoing one)."""
    loans = [p.data.order_id for p in batch if isinstance(p.data, _LOAN_EVENTS)]
    confirmed = [p.data.order_id for p in batch if isinstance(p.data, OrderConfirmed)]
    cancellations = [p.data for p in batch if isinstance(p.data, OrderCancelled)]
    cancelled = [c.order_id for c in cancellations]
    reservations = [p.data for p in batch if isinstance(p.data, StockReserved)]
    reserved = [r.order_id for r in reservations]
    placed = {p.data.order_id: p.data for p in batch if isinstance(p.data, OrderPlaced)}
    await _LOCKS.lock(tx, [*placed, *confirmed, *cancelled, *reserved, *loans])
    await _PARKING.take(tx, placed)
    await _load_seeded(tx, placed.values())
    await _load_confirmations(tx, confirmed + reserved)
    await _load_contacts(tx, (x.seller_id for r in reservations for x in r.lines))
    # A reservation of an order confirmed already (or earlier in the batch) texts its sellers.
    now_confirmed = set(confirmed)
    texting = [
        r
        for r in reservations
        if r.order_id in now_confirmed or tx.identity[CONFIRMED, r.order_id] is not None
    ]
    if not confirmed and not cancelled and not texting:
        return
    await _load_recipients(tx, confirmed + cancelled)
    await _load_sellers(tx, confirmed)
    found = [tx.identity[RECIPIENT, o] for o in confirmed + cancelled]
    told = [r for r in found if r is not None]
    # Orders placed earlier in the batch: their buyers are not written yet.
    told += [b for o in confirmed if o in placed and (b := _buyer(tx, placed[o])) is not None]
    shares = [s for o in confirmed for s in tx.identity[SELLERS, o]]
    skus = (
        [str(line["sku"]) for r in told for line in r.lines]
        + [str(x["sku"]) for s in shares for x in s.lines]
        + [x.sku for r in texting for x in r.lines]
        + [sku for c in cancellations for sku in c.skus or []]  # the products named
    )
    await _load_names(tx, skus)
    contacts = [tx.identity[CONTACT, x.seller_id] for r in texting for x in r.lines]
    phones = (
        [r.phone for r in told]
        + [s.phone for s in shares if s.phone is not None]
        + [c[0] for c in contacts if c is not None]
    )
    await _load_opt_outs(tx, phones)


async def queue_sms(
    tx: Tx,
    *,
    dedup_key: str,
    purpose: str,
    to: str,
    locale: Locale,
    body: str,
    order_id: str | None,
    caused_by: str,
    quiet: QuietHours | None = None,
    suppressed: str | None = None,
) -> None:
    """Queue one SMS unless its ``dedup_key`` already exists (written at commit): ``body``
    (rendered in ``locale``) signed for ``to`` (:func:`signed`: 【Caravan】 to any mainland
    number, as Chinese carriers require). ``caused_by``: the id of the event that asked for
    it, the cause of every event about it.

    An invalid number is recorded ``failed`` at once, and only if this call recorded it is
    ``sms.failed`` emitted; an opted-out one is recorded ``suppressed``, as is one the caller
    says is not to be sent (``suppressed``: why, its ``last_error``). Reminders wait for the
    end of the recipient's quiet hours.
    """
    text = signed(locale, to, body)
    info = encode_info(text)
    problem = phone_problem(to)
    now = datetime.now(UTC)
    status, not_before = "pending", now
    if problem is not None:
        status = "failed"
    elif suppressed is not None or await _opted_out(tx, to):
        status = "suppressed"
    elif quiet is not None and purpose in REMINDER_PURPOSES:
        not_before = quiet.next_allowed(now, zone_of(to, days.market_zone()))
    sms_id = new_id()
    row: dict[str, object] = {
        "sms_id": sms_id,
        "dedup_key": dedup_key,
        "purpose": purpose,
        "to": to,
        "locale": locale,
        "text": text,
        "encoding": info.encoding,
        "segments": info.segments,
        "order_id": order_id,
        "status": status,
        "next_attempt_at": not_before,
        "not_before": not_before,
        "last_error": problem or suppressed,
        "caused_by": caused_by,
        "trace_headers": current_trace_headers() or None,
    }
    if problem is None:
        tx.insert_later(sms, row, skip_existing=True)
        if status == "pending":
            tx.signal(SMS_QUEUED)
        return
    inserted = await tx.conn.execute(
        pg_insert(sms)
        .values(**row | failed_now(problem))
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(sms.c.sms_id)
    )
    if inserted.first() is None:
        return
    log.warning("not texting %s (%s): %s", masked(to), purpose, problem)  # maybe malformed
    await tx.emit(
        SmsFailed(
            sms_id=sms_id,
            to=to,
            reason="invalid_phone",
            detail=problem,
            order_id=order_id,
            purpose=purpose,
        ),
        correlation_id=order_id,
        causation_id=caused_by,
    )


async def _opted_out(tx: Tx, phone: str) -> bool:
    await _load_opt_outs(tx, [phone])
    return tx.identity[OPTED_OUT, phone] is True


async def _names(tx: Tx, locale: Locale, lines: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    skus = [str(line["sku"]) for line in lines]
    await _load_names(tx, skus)
    return [
        (product_name(locale, tx.identity[NAMES, sku] or {}, sku), line["quantity"])
        for sku, line in zip(skus, lines, strict=True)
    ]


def _buyer(tx: Tx, placed: OrderPlaced) -> Recipient | None:
    """The recipient ``order.placed`` tells of (None: it names no buyer), in the locale it
    says, else the one a seed gave the buyer (:func:`_load_seeded`, read before), else
    ``zh-CN``."""
    if placed.buyer is None:
        return None
    lines = [line.model_dump() for line in placed.lines]
    locale = placed.buyer.locale or tx.identity[SEEDED, placed.buyer.id] or DEFAULT_LOCALE
    return Recipient(placed.order_id, placed.order_ref, placed.buyer.phone, locale, lines)


async def on_order_placed(tx: Tx, parsed: Parsed, early: Mapping[EventType, Handler]) -> None:
    """Remember whom to text about the order; then act on its events that came first, in the
    order they came, each by its type's handler in ``early`` (the subscriptions')."""
    data = parsed.data
    assert isinstance(data, OrderPlaced)
    await _LOCKS.lock(tx, [data.order_id])
    await _load_seeded(tx, [data])
    found = _buyer(tx, data)
    if found is not None:
        _remember_buyer(tx, found)
    for parsed_early in await _PARKING.release(tx, data.order_id):
        if found is None:
            said = parsed_early.envelope.type
            log.warning("order %s names no buyer; %s not acted on", data.order_id, said)
            continue
        handler = early[EventType(parsed_early.envelope.type)]
        await handler(tx.caused_by(parsed_early.envelope), parsed_early)


def _remember_buyer(tx: Tx, found: Recipient) -> None:
    tx.insert_later(
        recipients,
        {
            "order_id": found.order_id,
            "order_ref": found.order_ref,
            "phone": found.phone,
            "locale": found.locale,
            "lines": found.lines,
        },
        skip_existing=True,
    )
    tx.identity[RECIPIENT, found.order_id] = found


def nothing_to_text(tx: Tx, order_id: str) -> None:
    """Nothing will text the buyer of ``order_id`` any more: its order ended with no loan (a
    cancelled order's loan is voided), or its loan was repaid or voided, so no reminder comes.
    Their recipient row is deleted ``notifications_recipient_retention_days`` from now, once
    no text of the order is still to be sent (services.notifications.bootstrap). Written at
    commit, after the row if this transaction adds it; no row (``order.placed`` not come yet):
    nothing is written, and the row comes without a date, kept. A reminder handled after it,
    in this batch or later, is not sent (:func:`on_instalment_due`)."""
    tx.update_later(recipients, "order_id", {"order_id": order_id, "done_at": datetime.now(UTC)})
    tx.identity[ENDED, order_id] = True  # for the recipient loaded later in the transaction
    found: Recipient | None = tx.identity.get((RECIPIENT, order_id))
    if found is not None:
        tx.identity[RECIPIENT, order_id] = replace(found, done=True)


async def _buyer_or_park(
    tx: Tx, parsed: Parsed, order_id: str, topic: Topic = Topic.ORDER_EVENTS
) -> Recipient | None:
    """The buyer of an order that ended, or whose loan did; None if ``order.placed`` has not
    come yet, and then the event (of ``topic``) is parked until it comes (under the order's
    lock, which its handler takes). A loan's event (``topic`` the payments') of an order
    whose ``order.placed`` came long ago and left no buyer kept (:func:`_buyer_gone`) waits
    for nothing: None, logged, not parked."""
    await _LOCKS.lock(tx, [order_id])
    await _load_recipients(tx, [order_id])
    found: Recipient | None = tx.identity[RECIPIENT, order_id]
    if found is None:
        if topic is Topic.PAYMENT_EVENTS and await _buyer_gone(tx, order_id):
            log.info("%s of order %s not acted on: %s", parsed.envelope.type, order_id, BUYER_GONE)
            return None
        _PARKING.park(tx, order_id, topic, parsed)
    return found


_CONFIRMED_NOT_PARKED = select(confirmed_orders.c.order_id).where(
    confirmed_orders.c.order_id == bindparam("order_id"),
    ~exists().where(parked.c.order_id == confirmed_orders.c.order_id),
)


async def _buyer_gone(tx: Tx, order_id: str) -> bool:
    """Whether ``order_id``, of which no buyer is kept, had its ``order.placed`` handled: its
    ``order.confirmed`` was acted on (a confirmation read before it is parked until it comes;
    ``confirmed_orders`` is never pruned, but forgets a confirmation an operator dropped
    parked: ``caravan parked drop``), and nothing of it is parked. Its buyer was then
    deleted by retention (``notifications_recipient_retention_days`` after the loan ended:
    its ``order.placed`` no longer in Kafka), or it named none. Under the order's lock."""
    await tx.flush()  # a confirmation, or an event parked, earlier in the transaction
    return await tx.conn.scalar(_CONFIRMED_NOT_PARKED, {"order_id": order_id}) is not None


async def _recipient(tx: Tx, order_id: str, purpose: str) -> Recipient | None:
    await _load_recipients(tx, [order_id])
    found: Recipient | None = tx.identity[RECIPIENT, order_id]
    if found is None:
        log.warning("no recipient known for order %s; %s not sent", order_id, purpose)
    return found


async def on_order_confirmed(tx: Tx, parsed: Parsed) -> None:
    d = parsed.data
    assert isinstance(d, OrderConfirmed)
    await _LOCKS.lock(tx, [d.order_id])
    await _load_confirmations(tx, [d.order_id])
    if tx.identity[CONFIRMED, d.order_id] is None:  # the first order.confirmed (under the lock)
        tx.insert_later(
            confirmed_orders,
            {"order_id": d.order_id, "event_id": parsed.envelope.id, "order_ref": d.order_ref},
            skip_existing=True,
        )
        tx.identity[CONFIRMED, d.order_id] = Confirmation(parsed.envelope.id, d.order_ref)
    row = await _buyer_or_park(tx, parsed, d.order_id)
    if row is not None:
        locale = pick_locale(row.locale)
        items = await _names(tx, locale, row.lines or [])
        schedule = d.payment.schedule
        body = render_order_confirmed(
            locale,
            row.order_ref,
            d.total_fen,
            d.payment.method,
            d.term_months,
            items,
            (schedule[0].amount_fen, schedule[0].due) if schedule else None,
            (sum(i.amount_fen for i in schedule), sum(i.interest_fen for i in schedule))
            if schedule
            else None,
        )
        await queue_sms(
            tx,
            dedup_key=f"{parsed.envelope.id}|{row.phone}|order_confirmed",
            purpose="order_confirmed",
            to=row.phone,
            locale=locale,
            body=body,
            order_id=d.order_id,
            caused_by=parsed.envelope.id,
        )
        if d.payment.method != "microloan" and d.payment.loan_id is None:
            nothing_to_text(tx, d.order_id)  # no loan: no reminder
    await _queue_seller_texts(tx, d.order_id)


async def on_stock_reserved(tx: Tx, parsed: Parsed) -> None:
    d = parsed.data
    assert isinstance(d, StockReserved)
    await _LOCKS.lock(tx, [d.order_id])
    by_seller: dict[str, list[dict[str, Any]]] = {}
    for line in d.lines:
        by_seller.setdefault(line.seller_id, []).append(
            {"sku": line.sku, "quantity": line.quantity, "unit_price_fen": line.unit_price_fen}
        )
    await _load_contacts(tx, by_seller)
    shares = []
    for seller_id, lines in sorted(by_seller.items()):
        tx.insert_later(
            order_sellers,
            {"order_id": d.order_id, "seller_id": seller_id, "lines": lines},
            skip_existing=True,
        )
        phone, locale = tx.identity[CONTACT, seller_id] or (None, None)
        shares.append(SellerShare(seller_id, lines, phone, locale))
    tx.identity[SELLERS, d.order_id] = shares
    await _queue_seller_texts(tx, d.order_id)


async def _queue_seller_texts(tx: Tx, order_id: str) -> None:
    """Text each seller of a confirmed order once (a no-op until both facts are known)."""
    await _load_confirmations(tx, [order_id])
    confirmed: Confirmation | None = tx.identity[CONFIRMED, order_id]
    if confirmed is None:
        return
    await _load_sellers(tx, [order_id])
    rows: list[SellerShare] = tx.identity[SELLERS, order_id]
    phones: set[str] = set()
    for row in sorted(rows, key=lambda share: share.seller_id):
        if row.phone is None:
            log.warning(
                "no phone known for seller %s; new order %s not sent", row.seller_id, order_id
            )
            continue
        locale = pick_locale(row.locale)
        amount = sum(int(line["quantity"]) * int(line["unit_price_fen"]) for line in row.lines)
        body = render_new_order_for_seller(
            locale, confirmed.order_ref, await _names(tx, locale, row.lines), amount
        )
        key = f"{confirmed.event_id}|{row.phone}|new_order"
        if row.phone in phones:  # sellers sharing a phone (a cooperative's): a text each
            key += f"|{row.seller_id}"
        phones.add(row.phone)
        await queue_sms(
            tx,
            dedup_key=key,
            purpose="new_order",
            to=row.phone,
            locale=locale,
            body=body,
            order_id=order_id,
            caused_by=confirmed.event_id,
        )


async def on_order_cancelled(tx: Tx, parsed: Parsed) -> None:
    d = parsed.data
    assert isinstance(d, OrderCancelled)
    row = await _buyer_or_park(tx, parsed, d.order_id)
    if row is None:
        return
    await _load_names(tx, d.skus or [])
    names = {sku: tx.identity[NAMES, sku] or {} for sku in d.skus or []}

    def said(locale: Locale) -> str:
        products = [product_name(locale, names[sku], sku) for sku in d.skus or []]
        return render_order_cancelled(locale, row.order_ref, d.reason, products)

    await _text_buyer(tx, parsed, row, "order_cancelled", said)
    nothing_to_text(tx, d.order_id)


async def _text_buyer(
    tx: Tx,
    parsed: Parsed,
    row: Recipient,
    purpose: str,
    body: Callable[[Locale], str],
    *,
    dedup_key: str | None = None,
    quiet: QuietHours | None = None,
    suppressed: str | None = None,
) -> None:
    """Queue the buyer of ``row``'s order the text of ``purpose`` that ``parsed`` asks for,
    ``body`` rendered in their locale: once per event (``dedup_key``: once per what it
    names); kept ``suppressed`` instead, saying why, if that says why (:func:`queue_sms`)."""
    locale = pick_locale(row.locale)
    await queue_sms(
        tx,
        dedup_key=dedup_key or f"{parsed.envelope.id}|{row.phone}|{purpose}",
        purpose=purpose,
        to=row.phone,
        locale=locale,
        body=body(locale),
        order_id=row.order_id,
        caused_by=parsed.envelope.id,
        quiet=quiet,
        suppressed=suppressed,
    )


async def on_instalment_due(tx: Tx, parsed: Parsed, quiet: QuietHours) -> None:
    """Remind the buyer of an instalment: once per (loan, instalment, stage), even if payments
    announces the same stage again in another event, and never in quiet hours; not at all
    once its stage has passed (an instalment "due today" handled the day after). Once
    nothing is to remind the buyer of (the order cancelled or confirmed without a loan, the
    loan voided or repaid: :func:`nothing_to_text`), the reminder is kept ``suppressed``,
    saying why, and not sent: payments announces none then, but one in flight as the loan
    ended, or replayed (``caravan replay``), comes after. One that comes before the order's
    ``order.placed`` is parked until it comes (with the loan's void or repayments that came
    with it: acted on in the order they came, each finds what the one before did)."""
    d = parsed.data
    assert isinstance(d, InstalmentDue)
    purpose = f"instalment_{d.stage}"
    if stage_passed(d.stage, d.due, days.today()):
        log.info("reminder %s of order %s not sent: due %s, passed", purpose, d.order_id, d.due)
        return
    row = await _buyer_or_park(tx, parsed, d.order_id, Topic.PAYMENT_EVENTS)
    if row is None:
        return  # sent, or kept suppressed, once order.placed comes
    if row.done:
        log.info("reminder %s of order %s not sent: %s", purpose, d.order_id, NO_LOAN_LEFT)
    await _text_buyer(
        tx,
        parsed,
        row,
        purpose,
        lambda locale: render_instalment(
            locale, d.stage, row.order_ref, d.number, d.amount_fen, d.due
        ),
        dedup_key=reminder_key(d.loan_id, d.number, d.due, row.phone, purpose),
        quiet=quiet,
        suppressed=NO_LOAN_LEFT if row.done else None,
    )


async def on_payment_refunded(tx: Tx, parsed: Parsed) -> None:
    """What the buyer was owed back was paid to them by hand (``payment.refunded``): they
    are told, once (the event's id keys the text), while their order's recipient is kept;
    once ``order.placed`` comes, if it comes after (parked until then; one ``unplaced``, of
    an order orders never had, waits for none: no one to tell)."""
    d = parsed.data
    assert isinstance(d, PaymentRefunded)
    if d.unplaced:
        row = await _recipient(tx, d.order_id, REFUND_PAID)
    else:
        row = await _buyer_or_park(tx, parsed, d.order_id, Topic.PAYMENT_EVENTS)
    if row is None:
        return
    said = partial(render_refund_paid, order_ref=row.order_ref, amount_fen=d.amount_fen)
    await _text_buyer(tx, parsed, row, REFUND_PAID, said)


async def on_instalments_settled(tx: Tx, parsed: Parsed) -> None:
    """A repayment paid instalments off (``payment.repaid``), or the loan was voided
    (``payment.voided``): their reminders still waiting to be sent, out of quiet hours (one
    announced at midnight waits until the morning), are not sent; those of instalments it
    paid into without paying them off say what is left (:func:`_restate_reminders`). One
    being sent is left. A void or a last repayment marks the order's recipient done
    (:func:`nothing_to_text`). One that comes before the order's ``order.placed`` is parked
    until it comes, as an outcome is, so that the mark holds whichever came first, and a
    reminder parked before it is dropped or restated when both are acted on (a void
    ``unplaced``, of an order orders never had, waits for none, and the loan's events
    parked before it are dropped, logged)."""
    d = parsed.data
    assert isinstance(d, PaymentRepaid | PaymentVoided)
    if d.loan_id is None:
        return  # a prepaid payment voided: no loan, no reminders
    # A void of an order orders never had (unplaced) waits for no order.placed, which never
    # comes, nor do the loan's events parked before it (its reminders, repayments); any other
    # waits for it, as a repayment does (a reminder may be parked before it).
    if isinstance(d, PaymentVoided) and d.unplaced:
        await _LOCKS.lock(tx, [d.order_id])  # as a handler parking for it does
        await _PARKING.drop(tx, d.order_id, "its order never placed: payment.voided unplaced")
    elif await _buyer_or_park(tx, parsed, d.order_id, Topic.PAYMENT_EVENTS) is None:
        return  # acted on once order.placed comes, after the reminders parked before it
    await tx.flush()  # the reminders queued earlier in the batch (written at commit)
    if isinstance(d, PaymentRepaid) and not d.fully_repaid:
        await _restate_reminders(tx, d)
    if isinstance(d, PaymentVoided) or d.fully_repaid:
        keys = [reminder_prefix(d.loan_id)]
        nothing_to_text(tx, d.order_id)
    else:
        keys = [reminder_prefix(d.loan_id, n) for n in d.settled_instalments]
    if not keys:
        return
    said = "repaid before it was sent" if isinstance(d, PaymentRepaid) else "loan voided"
    dropped = await tx.conn.execute(
        update(sms)
        .where(*_waiting_reminders(d.order_id, keys))
        .values(status="suppressed", last_error=said)
        .returning(sms.c.purpose)
    )
    for row in dropped:
        log.info("reminder %s of order %s not sent: %s", row.purpose, d.order_id, said)


def _waiting_reminders(order_id: str, prefixes: Sequence[str]) -> list[ColumnElement[bool]]:
    """The conditions of ``order_id``'s reminders still waiting to be sent (pending: one being
    sent is left) whose dedup key starts with one of ``prefixes`` (:func:`reminder_prefix`)."""
    return [
        sms.c.status == "pending",
        sms.c.order_id == order_id,
        sms.c.purpose.in_(sorted(REMINDER_PURPOSES)),
        or_(*(sms.c.dedup_key.startswith(key, autoescape=True) for key in prefixes)),
    ]


async def _restate_reminders(tx: Tx, d: PaymentRepaid) -> None:
    """The reminders still waiting of the instalments ``d`` paid into without paying off say
    what is left on them, not what was owed when they were announced: their text is rendered
    again in place (same row, same dedup key: the announcement redelivered stays a no-op).
    Locked as the dispatcher claims (it skips them meanwhile); one being sent is left."""
    left = {part.number: part.remaining_fen for part in d.instalments_left if part.remaining_fen}
    if not left:
        return
    keys = [reminder_prefix(d.loan_id, number) for number in left]
    rows = (
        await tx.conn.execute(
            select(sms.c.sms_id, sms.c.dedup_key, sms.c.purpose, sms.c.to, sms.c.locale)
            .where(*_waiting_reminders(d.order_id, keys))
            .with_for_update()
        )
    ).all()
    if not rows:
        return
    recipient = await _recipient(tx, d.order_id, "restated reminder")
    if recipient is None:
        return
    for row in rows:
        named = reminder_of(row.dedup_key)
        assert named is not None  # found by its prefix
        _, number, due = named
        stage = cast(InstalmentStage, row.purpose.removeprefix("instalment_"))
        locale = pick_locale(row.locale)
        body = render_instalment(locale, stage, recipient.order_ref, number, left[number], due)
        text = signed(locale, row.to, body)
        info = encode_info(text)
        await tx.conn.execute(
            update(sms)
            .where(sms.c.sms_id == row.sms_id)
            .values(text=text, encoding=info.encoding, segments=info.segments)
        )
        log.info(
            "reminder %s of order %s restated: %s fen left on instalment %s",
            row.purpose,
            d.order_id,
            left[number],
            number,
        )


async def load_seed(tx: Tx, seed: SeedFile) -> Loaded:
    """Sellers' phones and locales (one not said is left as it is, ``zh-CN`` when new),
    product names, and buyers' locales (one not said is left as it is; none: an order's
    texts in ``zh-CN`` unless it says another); loading twice changes nothing. Told as
    :class:`Loaded`, every seller and product row it wrote as changed: which of the file's
    sellers and products are new is inventory's to say (it has them all), a seller's locale
    changed is this part's alone."""
    said = [{"seller_id": s.id, "phone": s.phone, "locale": s.locale} for s in seed.sellers]
    wrote: dict[str, set[str]] = {"sellers": set(), "products": set()}
    for with_locale in (True, False):  # a locale not said is left as it is
        rows = [
            row if with_locale else {"seller_id": row["seller_id"], "phone": row["phone"]}
            for row in said
            if (row["locale"] is not None) == with_locale
        ]
        wrote["sellers"] |= await driver.upsert(tx.conn, sellers, "seller_id", rows)
    names = [{"sku": p.sku, "names": p.name} for p in seed.products]
    wrote["products"] = await driver.upsert(tx.conn, products, "sku", names)
    # Their texts' language where an order leaves it out; not told: buyers are payments'
    # credit lines in the summary, which a seed opens only.
    spoken = [{"buyer_id": b.id, "locale": b.locale} for b in seed.buyers if b.locale]
    await driver.upsert(tx.conn, buyers, "buyer_id", spoken)
    return Loaded(changed=wrote)  # upserts: nothing in the file is left as it was

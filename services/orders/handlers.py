"""Use cases of the orders service. Each runs inside one :class:`~shared.messaging.uow.Tx`."""

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from prometheus_client import Counter

from services.orders.adapters.repository import OrderRepository
from services.orders.domain.order import Canceller, Order
from shared.auth import audit
from shared.events.envelope import CloudEvent
from shared.events.ignored import Ignored, ignored_fields
from shared.events.inventory import StockExpired, StockRejected, StockReserved
from shared.events.orders import (
    HTTP_SOURCE,
    FieldError,
    OrderRejected,
    OrderRequested,
    platform_app,
    refused_source,
)
from shared.events.payments import (
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
    PaymentVoided,
)
from shared.events.platform import PlatformOrderRequested
from shared.events.registry import Parsed, PoisonRecord
from shared.ids import answer_id, new_id
from shared.logs import order_known, retried, working_for
from shared.messaging.uow import Tx
from shared.metrics import owned_by, start_at_zero
from shared.topics import EventType, Topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placed:
    """The outcome of placing: the order, and whether this request created it."""

    order_id: str
    status: str
    created: bool
    same_request: bool
    placed_by: str | None = None  # the token that placed it over HTTP


def request_hash(request: OrderRequested) -> str:
    """A digest of what ``request`` asks for: the fields given other than as their defaults,
    so that a field the contract adds later (optional, with a default) leaves the digest of
    the same body as it was, and a client's retry across that upgrade is the same request;
    and the lines in SKU order (a SKU is on one line at most), so that a retry listing them
    in another order is the same request too."""
    fields = _fields(request)
    fields["lines"] = sorted(fields["lines"], key=lambda line: str(line["sku"]))
    return _digest(fields)


def earlier_hashes(request: OrderRequested) -> tuple[str, str]:
    """The digests of ``request`` as orders placed earlier were digested: with its lines in
    the order given (until the evening of 2026-12-03), and every field, defaults too
    (before 2026-12-03). A retry of such an order is known as the same request by them."""
    return _digest(_fields(request)), _digest(_fields(request, every=True))


REQUEST_ERASED = "erased"
"""An order's ``request_hash`` once its buyer is erased (``caravan buyers erase``): the digest
went with the number and delivery in it, so a request can no longer be compared with it."""


def same_request(stored: str, request: OrderRequested) -> bool:
    """Whether ``request`` is the one an order was placed by, its digest ``stored``: digested
    now or as before (:func:`earlier_hashes`). Never once the buyer is erased: a request under
    a new id is then another request under the order's ref, refused (docs/personal-data.md,
    Digests); the same record read again is told by its id (:func:`on_request_again`)."""
    return stored in (request_hash(request), *earlier_hashes(request))


LOCALE_LEFT_OUT = "zh-CN"
"""What a request's ``buyer.locale`` left out was read as until 2026-12-06, when it became
optional with no default (left out: the language a seed file gave the buyer, else this):
every digest made before took the one for the other, so a digest still does. A buyer's
``zh-CN`` given and one left out are the same request, as they were, and a retry across
that upgrade, given either way, is known as the order it placed (``exclude_defaults`` now
keeps a ``zh-CN`` given, and ``every`` field gave ``zh-CN`` for one left out)."""


def _fields(request: OrderRequested, every: bool = False) -> dict[str, Any]:
    """``request``'s fields as a digest takes them: those given other than as their defaults
    (``every``: all of them), the buyer's locale as :data:`LOCALE_LEFT_OUT` says."""
    fields = request.model_dump(mode="json", exclude_defaults=not every)
    buyer = fields["buyer"]
    if every and buyer["locale"] is None:
        buyer["locale"] = LOCALE_LEFT_OUT
    elif not every and buyer.get("locale") == LOCALE_LEFT_OUT:
        del buyer["locale"]
    return fields


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def place_order(
    tx: Tx,
    request: OrderRequested,
    source: str,
    deadline: timedelta,
    placed_by: str | None = None,
) -> Placed:
    """Create the order for (source, order_ref) unless it exists; never a second one.
    ``placed_by``: the token placing it over HTTP, kept with a new order."""
    repo = OrderRepository(tx)
    digest = request_hash(request)
    existing = await repo.find_by_ref(source, request.order_ref)
    if existing is None:
        order = Order.place(new_id(), request, source, datetime.now(UTC), deadline)
        await repo.add(order, digest, placed_by)
        return Placed(order.order_id, order.status, True, True, placed_by)
    order_id, status, stored_digest, by = existing
    log.info("order %s/%s already exists as %s", source, request.order_ref, order_id)
    same = same_request(stored_digest, request)
    return Placed(order_id, status, created=False, same_request=same, placed_by=by)


async def on_order_requested(tx: Tx, parsed: Parsed, deadline: timedelta) -> None:
    """Place the order a storefront (``orders.requests.v1``) or the platform adapter
    (``platform.events.v1``) asks for. A marketplace platform's source is believed only
    from the adapter's topic: anyone may publish the other, and an order of a platform's
    source is one the platform was paid for (see :mod:`shared.events.platform`). Such a
    request elsewhere is answered ``order.rejected``, and so is one of source ``http``, the
    orders of ``POST /orders`` (their keys are its clients'), each in any case
    (:func:`~shared.events.orders.refused_source`); unless, but for ``http``, its order
    exists: a replay of what placed it there before it was refused (a platform's, by the
    adapter, until 2026-12-03; in another case, ``Platform/...`` or ``HTTP``, until
    2026-12-06) changes nothing."""
    request, source = parsed.data, parsed.envelope.source
    assert isinstance(request, OrderRequested)
    from_adapter = isinstance(request, PlatformOrderRequested)
    if from_adapter:
        adapter = "the platform adapter names a platform's source"
        refused = None if platform_app(source) is not None else adapter
    else:
        refused = refused_source(source)
    if refused is None:
        placed = await place_order(tx, request, source, deadline)
        if not placed.same_request:
            raise _reused(parsed.envelope, request.order_ref, placed.order_id)
        order_known(placed.order_id)
        if not from_adapter:  # a storefront's: the adapter's requests are Caravan's own
            _tell_ignored_after(tx, parsed, request)
        return
    repo = OrderRepository(tx)
    earlier = source != HTTP_SOURCE and not from_adapter  # http's orders are POST /orders'
    if earlier and await repo.find_by_ref(source, request.order_ref):
        log.info("order %s/%s already exists; not placed again", source, request.order_ref)
        return
    log.warning("order.requested of source %r refused: %s", source, refused)
    rejected = OrderRejected(
        order_ref=request.order_ref,
        source=source,
        errors=[FieldError(field="source", message=refused)],
    )
    await tx.emit(
        rejected, correlation_id=request.order_ref, event_id=_rejection_id(parsed.envelope)
    )


async def on_request_again(tx: Tx, parsed: Parsed) -> None:
    """A storefront's request whose (source, id) was handled before: the same request again
    (delivered twice, replayed, published again as it was), which changes nothing, or another
    request under an id its source used before, which the inbox would drop unsaid, the order
    never placed: refused, dead-lettered and answered ``order.rejected`` naming ``id``. What
    that id was handled as placed (or found placed) the order its (source, order_ref) names,
    of the same content; or it was refused for its source, as any request under it is."""
    request, envelope = parsed.data, parsed.envelope
    assert isinstance(request, OrderRequested)
    if refused_source(envelope.source) is not None:
        return
    found = await OrderRepository(tx).find_by_ref(envelope.source, request.order_ref)
    # Its buyer erased, the order's digest compares with nothing; the record handled under
    # this id and ref is the one read again (a replay of orders.requests.v1): nothing to do.
    if found is not None and (found[2] == REQUEST_ERASED or same_request(found[2], request)):
        return
    said = (
        f"{envelope.source} sent another request under this id before; this one was not"
        " applied: give each request an id of its own"
    )
    poison = PoisonRecord("invalid_data", f"id: {said}", envelope)
    poison.errors = [{"field": "id", "message": said}]
    raise poison


IGNORED_FIELDS = Counter(
    "caravan_orders_ignored_fields",
    "Order requests placed (or found placed) whose body held fields Caravan ignored, by"
    " POST /orders or on orders.requests.v1, by field: unknown (any name order.requested has"
    " no field of, at any depth: the warning names them), or one meaning nothing for what"
    " was sent (payment.term_months of a prepaid payment); a request counts once under each",
    ["field"],
)
owned_by("orders", IGNORED_FIELDS)
UNKNOWN_FIELDS = "unknown"
start_at_zero(IGNORED_FIELDS, [UNKNOWN_FIELDS, "payment.term_months"])
NAMES_SAID = 10
"""The most names of fields ignored one warning says (each cut to :data:`NAME_SAID`): a body
may hold thousands of keys."""
NAME_SAID = 64


def tell_ignored(request: str, sender: str, ignored: Ignored) -> None:
    """Say, once for a request placed (or found placed), what its body held that Caravan
    ignored: a warning naming the fields (never what they held) and :data:`IGNORED_FIELDS`.
    A storefront whose every order holds the same fields (one it adds that the contract has
    not) would write a line an order, hundreds a second under load: the same fields from the
    same ``sender`` (its token, or its source on the topic) are said as a retried fault is
    (:func:`~shared.logs.retried`): once, then at most once a minute, saying how many were not
    logged; the counter counts every request."""
    parts = []
    if ignored.unknown:
        parts.append(f"{_names(ignored.unknown)} (no such field in order.requested)")
    if ignored.unused:
        parts.append(f"{_names(ignored.unused)} (meaning nothing for what was sent)")
    fields = "; ".join(parts)
    same = retried(f"{sender} sends fields Caravan ignores: {fields}")
    log.warning("%s: ignored %s", request, fields, extra=same)
    for field in ([UNKNOWN_FIELDS] if ignored.unknown else []) + [*dict.fromkeys(ignored.unused)]:
        IGNORED_FIELDS.labels(field).inc()


def _tell_ignored_after(tx: Tx, parsed: Parsed, request: OrderRequested) -> None:
    """What a storefront's ``order.requested`` held that Caravan ignored, said once ``tx``
    commits (:func:`tell_ignored`): no answer carries it, as ``POST /orders``'s 202 does."""
    ignored = ignored_fields(parsed.envelope.data, request)
    if ignored.fields:
        source = parsed.envelope.source
        said = f"{parsed.envelope.type} {source}/{request.order_ref}"
        tx.after_commit(partial(tell_ignored, said, source, ignored))


def _names(fields: Sequence[str]) -> str:
    said = [f if len(f) <= NAME_SAID else f"{f[:NAME_SAID]}..." for f in fields[:NAMES_SAID]]
    more = len(fields) - NAMES_SAID
    return ", ".join(said) + (f" and {more} more" if more > 0 else "")


def _reused(envelope: CloudEvent, ref: str, order_id: str) -> PoisonRecord:
    """The poison of a request whose (source, order_ref) names ``order_id``, an order of
    other content: dead-lettered and answered ``order.rejected`` (:func:`on_invalid_request`)
    as invalid data is, the order left as it was. (A plain duplicate or a replay of the
    request that placed it is the same content, and changes nothing silently.)"""
    said = (
        f"{envelope.source}/{ref} already names order {order_id} with other content;"
        " that order stands and this request was not applied"
    )
    poison = PoisonRecord("order_ref_reused", said, envelope)
    poison.errors = [{"field": "order_ref", "message": said}]
    return poison


async def prefetch_requests(tx: Tx, batch: Sequence[Parsed]) -> None:
    """Look up the idempotency keys of a batch of requests in one statement."""
    keys = [
        (p.envelope.source, p.data.order_ref) for p in batch if isinstance(p.data, OrderRequested)
    ]
    await OrderRepository(tx).load_refs(keys)


async def prefetch_orders(tx: Tx, batch: Sequence[Parsed]) -> None:
    """Load and lock the orders that a batch of inventory or payment events concerns."""
    ids = [getattr(p.data, "order_id", None) for p in batch]
    await OrderRepository(tx).load(i for i in ids if isinstance(i, str))


async def on_invalid_request(tx: Tx, poison: PoisonRecord) -> None:
    """An ``order.requested`` whose data is invalid, or whose order_ref names an order of
    other content, is answered with ``order.rejected``."""
    envelope = poison.envelope
    if envelope is None or not answered_rejected(envelope.type, poison.code):
        return
    # What it says its order_ref is, cut to an order_ref's length: it may be anything up to
    # the broker's limit, and the answer, named after it, must stay one Kafka takes (else
    # the outbox would stop at it, and the service publish nothing after it).
    given = envelope.data.get("order_ref")
    ref = str(given)[:64] if given is not None else ""
    errors = [FieldError(field=e["field"], message=e["message"]) for e in poison.errors]
    standing = None  # the order a reused order_ref names, which stands: said, so that a
    if poison.code == "order_ref_reused":  # reader does not take this for its rejection
        found = await OrderRepository(tx).find_by_ref(envelope.source, ref)
        standing = found[0] if found is not None else None  # (order_id, ...)
    await tx.emit(
        OrderRejected(
            order_ref=ref,
            source=envelope.source,
            errors=errors or [FieldError(field="data", message=poison.message)],
            order_id=standing,
        ),
        correlation_id=ref or envelope.id,
        event_id=_rejection_id(envelope),
    )


def answered_rejected(event_type: str, code: str) -> bool:
    """Whether a record of ``event_type`` dead-lettered for ``code`` by the orders service is
    answered ``order.rejected`` (:func:`on_invalid_request`): a request with invalid data, or
    whose order_ref names an order of other content."""
    requests = (EventType.ORDER_REQUESTED, EventType.PLATFORM_ORDER_REQUESTED)
    return event_type in requests and code in ("invalid_data", "order_ref_reused")


def _rejection_id(request: CloudEvent) -> str:
    """The ``order.rejected`` of a request, the same event each time that request is answered
    (delivered twice, redriven): readers deduplicate it by (source, id)."""
    content = orjson.dumps(request.data, option=orjson.OPT_SORT_KEYS)
    return answer_id(EventType.ORDER_REJECTED.value, request.source, request.id, content)


UNKNOWN_ORDER_EVENTS = Counter(
    "caravan_orders_unknown_order_events",
    "Events of inventory and payments about an order this service never had, ignored (by"
    " type): none in a working system, where every one of them answers an order.placed; a"
    " forged or stray record on their topics (a producer the ACLs let write them, another"
    " environment's, a test's), or orders' database restored from before the order was"
    " placed",
    ["type"],
)
owned_by("orders", UNKNOWN_ORDER_EVENTS)
ABOUT_AN_ORDER = (
    EventType.STOCK_RESERVED,
    EventType.STOCK_REJECTED,
    EventType.STOCK_EXPIRED,
    EventType.PAYMENT_AUTHORIZED,
    EventType.PAYMENT_DECLINED,
    EventType.PAYMENT_VOIDED,
    EventType.PAYMENT_REFUNDED,
)
"""The types orders reads from inventory and payments, each about an order (:func:`_apply`)."""
start_at_zero(UNKNOWN_ORDER_EVENTS, [t.value for t in ABOUT_AN_ORDER])


async def _apply(
    tx: Tx,
    order_id: str,
    event_type: str,
    change: Callable[[Order], None] | None,
    amount_fen: int | None = None,
    reference: str | None = None,
) -> None:
    """Record ``event_type`` on the order's timeline, with the amount and reference it names
    (a refund's, or what a void left owed back), and make its ``change``; None: an event
    recorded only, which comes after the order's end by nature (nothing said of it then)."""
    repo = OrderRepository(tx)
    order = await repo.get(order_id)
    if order is None:
        log.warning("%s for unknown order %s ignored", event_type, order_id)
        tx.after_commit(UNKNOWN_ORDER_EVENTS.labels(event_type).inc)
        return
    await repo.record(order_id, event_type, amount_fen, reference)
    if change is None:
        return
    was_terminal = order.terminal
    change(order)
    if was_terminal:
        log.info("%s arrived after the order ended %s; recorded only", event_type, order.status)
    await repo.save(order)


async def on_stock_reserved(tx: Tx, parsed: Parsed) -> None:
    data = parsed.data
    assert isinstance(data, StockReserved)
    await _apply(
        tx, data.order_id, parsed.envelope.type, lambda o: o.stock_reserved(data.total_fen)
    )
    repo = OrderRepository(tx)
    if await repo.get(data.order_id) is not None:  # the order _apply loaded, or none
        repo.sold_by(data.order_id, {line.seller_id for line in data.lines})


async def on_stock_rejected(tx: Tx, parsed: Parsed) -> None:
    data = parsed.data
    assert isinstance(data, StockRejected)
    await _apply(
        tx, data.order_id, parsed.envelope.type, lambda o: o.stock_rejected(data.reason, data.skus)
    )


ENDS_HELD = Counter(
    "caravan_orders_ends_held",
    "stock.expired of orders that had ended (inventory held their stock: it never applied"
    " the end, its handler dead-lettered it, say), by what orders did: republished (the end"
    " published again, the same event), unsent (the end not published yet: it is on its way),"
    " missing (the end no longer in the outbox: the stock stays held until an operator"
    " redrives inventory's dead letter of it)",
    ["outcome"],
)
owned_by("orders", ENDS_HELD)
start_at_zero(ENDS_HELD, ("republished", "unsent", "missing"))


async def on_stock_expired(tx: Tx, parsed: Parsed) -> None:
    """A pending order whose hold ran out is cancelled (``expired``); an order that had ended
    has its end published again (:func:`_publish_end_again`)."""
    data = parsed.data
    assert isinstance(data, StockExpired)
    order = await OrderRepository(tx).get(data.order_id)
    ended = order is not None and order.terminal
    await _apply(tx, data.order_id, parsed.envelope.type, lambda o: o.hold_expired())
    if ended:
        assert order is not None
        await _publish_end_again(tx, order)


async def _publish_end_again(tx: Tx, order: Order) -> None:
    """Inventory still held the stock of ``order``, which had ended: it never applied the end
    (its handler failed on it three times and dead-lettered it, or it lags behind). The end's
    record is published again from the outbox as it was, the same event with the same ``id``:
    every consumer that handled it drops it by its inbox (a dead letter claims another key),
    and inventory, which did not, releases or sells the stock now. Storefronts read it as any
    repeat (docs/topics.md). An end not sent yet is on its way; one pruned from the outbox
    is logged as an error for an operator, who redrives inventory's dead letter of it."""
    ended = EventType.ORDER_CONFIRMED if order.status == "confirmed" else EventType.ORDER_CANCELLED
    await tx.flush()  # an end recorded earlier in this transaction (its batch) is read back
    emitted = await OrderRepository(tx).emitted(order.order_id, ended)
    if emitted is None:
        outcome = "missing"
        log.error(
            "inventory holds stock of order %s, %s, and its %s is not in the outbox to publish"
            " again (pruned, or set aside: Kafka refused it): the stock stays held until"
            " inventory's dead letter of it is redriven (caravan dlq list --topic %s)",
            order.order_id,
            order.status,
            ended.value,
            Topic.ORDER_EVENTS.value,
        )
    elif not emitted.sent:
        outcome = "unsent"
        log.info("%s of order %s is not published yet; not again", ended.value, order.order_id)
    else:
        outcome = "republished"
        log.warning(
            "inventory holds stock of order %s, %s: its %s published again",
            order.order_id,
            order.status,
            ended.value,
        )
        await tx.emit_raw(Topic.ORDER_EVENTS.value, emitted.key, emitted.value, emitted.headers)
    tx.after_commit(ENDS_HELD.labels(outcome).inc)


async def on_payment_authorized(tx: Tx, parsed: Parsed) -> None:
    data = parsed.data
    assert isinstance(data, PaymentAuthorized)
    await _apply(
        tx,
        data.order_id,
        parsed.envelope.type,
        lambda o: o.payment_authorized(data.amount_fen, data.loan_id, data.schedule),
    )


async def on_payment_declined(tx: Tx, parsed: Parsed) -> None:
    data = parsed.data
    assert isinstance(data, PaymentDeclined)
    await _apply(tx, data.order_id, parsed.envelope.type, lambda o: o.payment_declined(data.reason))


async def on_payment_undone(tx: Tx, parsed: Parsed) -> None:
    """A payment voided because its order was cancelled (payments authorised it, reading the
    order's ``stock.reserved`` before its ``order.cancelled``), or by an operator after the
    sale (the order stays confirmed), or what its buyer was owed
    back refunded by hand (``payment.refunded``): recorded only, never a change of status,
    so that the timeline of a cancelled order that a late ``payment.authorized`` reached ends
    with the void, not with an authorisation the buyer would take for a charge or a loan
    standing, and an operator reading it sees what the buyer is owed back and the refund
    paid."""
    data = parsed.data
    assert isinstance(data, PaymentVoided | PaymentRefunded)
    if isinstance(data, PaymentRefunded):  # what was paid back, under which transfer
        await _apply(tx, data.order_id, parsed.envelope.type, None, data.amount_fen, data.reference)
    else:  # what the buyer is owed back, if anything
        await _apply(tx, data.order_id, parsed.envelope.type, None, data.refund_owed_fen or None)


async def expire_due(tx: Tx, now: datetime) -> list[str]:
    """Cancel (``expired``) pending orders whose deadline has passed; returns their ids, the
    oldest deadline first. Each cancellation continues the trace of the request that placed
    the order (expired orders are those operators look into), its log lines tagged with the
    order id."""
    repo = OrderRepository(tx)
    due = await repo.due_for_expiry(now)
    for order_id, trace_headers in due:
        with working_for(trace_headers, "orders expiry", order_id):
            order = await repo.get(order_id)
            assert order is not None
            order.expire(now)
            await repo.save(order)
    return [order_id for order_id, _ in due]


async def cancel_by(
    tx: Tx, order_id: str, who: Canceller, actor: str, reason: str | None
) -> tuple[Order, bool] | None:
    """Cancel on ``who``'s word (the buyer's, ``cancelled_by_buyer``; an operator's own,
    ``cancelled_by_operator``), and whether it was cancelled now (False: it was cancelled
    before, and stays as it was); raises ``OrderAlreadyConfirmed`` after confirmation. A
    cancellation made now is in the audit trail, ``actor`` (the calling token's name) its
    author, its detail ``reason`` (what the caller said of it, if anything), ``by`` (who the
    caller said asked) and ``reason_code`` (the order's reason it ended with): an operator's own
    cancellation told from one made for a buyer who phoned."""
    repo = OrderRepository(tx)
    order = await repo.get(order_id)
    if order is None:
        return None
    was, pending = order.status, not order.terminal
    order.cancel_by(who)
    await repo.save(order)
    if pending:
        said = {"reason": reason} if reason is not None else {}
        audit.record_later(
            tx,
            actor,
            "order.cancel",
            order_id,
            before={"status": was},
            after={"status": order.status},
            detail=said | {"by": who, "reason_code": order.reason},
        )
    return order, pending

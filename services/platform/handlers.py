"""Use cases of the platform adapter, each inside one :class:`~shared.messaging.uow.Tx`.

A push is answered only after the order was fetched from the platform (outside any transaction,
see :mod:`services.platform.entrypoints.http`); :func:`accept_push` then decides in one
transaction, one push of a platform order at a time (its advisory lock): the push id is
recorded (the same push again is a duplicate, another of that id refused), and a paid order
whose SKUs and buyer are mapped is placed by publishing ``platform.order_requested`` (on
``platform.events.v1``, which only the adapter may write) through the outbox, at most once per
(app, platform order id): the ``platform_orders`` row and the outbox row commit together. The
orders service's (source, order_ref) idempotency is the second guard.

An outcome (``order.confirmed``, ``order.cancelled``) of a platform order whose
``order.placed`` has not come yet (a redrive, a replay or partitions added can make that
happen) is parked (:mod:`shared.messaging.parking`) and its callback queued when
``order.placed`` comes: the order is known to be the platform's by its order ref, which a
``platform_orders`` row not placed yet holds.
"""

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.platform.adapters.tables import (
    callbacks,
    closed_unplaced,
    mappings,
    parked,
    platform_orders,
    problems,
    pushes,
)
from services.platform.domain.orders import (
    NOT_NUMBERED,
    BuyerMapping,
    PlatformOrder,
    Problem,
    ProblemKind,
    SkuMapping,
    as_placed,
    changed_after_placed,
    changes_since,
    fulfilled_after_cancelled,
    mapped_to_unknown_sku,
    meaning,
    paid_after_cancelled,
    rejected,
    to_request,
    undone_on_platform,
    unknown_status,
)
from services.platform.metrics import OPEN_PROBLEMS, PROBLEMS
from shared.db import driver
from shared.events.orders import (
    ORDER_REF_PATTERN,
    PLATFORM_SOURCE_PREFIX,
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    platform_app,
)
from shared.events.platform import PlatformOrderPaid
from shared.events.registry import Parsed
from shared.messaging.parking import OrderLocks, Parking
from shared.messaging.uow import Tx
from shared.telemetry import current_trace_headers
from shared.topics import Topic

log = logging.getLogger(__name__)

CALLBACKS_DUE = "platform.callbacks"
"""Signal of a transaction that queued a status callback (it wakes the callback loop)."""

Decided = Literal["accepted", "duplicate", "problem", "ignored"]
"""What :func:`decide` made of an order as the platform has it (a push's, or a refetch's)."""
Accepted = Literal[Decided, "replayed"]


@dataclass(frozen=True)
class Decision:
    """What a push or a refetch made of an order: its ``outcome``, and for a ``problem`` the
    kinds of the problems found (as operations list them), which the platform is told, and
    of an ``invalid_order`` each field at fault (:attr:`Problem.errors`)."""

    outcome: Accepted
    problems: tuple[ProblemKind, ...] = ()
    errors: tuple[dict[str, str], ...] = ()


_LOCKS = OrderLocks(0x9A7)  # the platform adapter's advisory lock of each order
_PLATFORM_ORDER_LOCKS = OrderLocks(0x9A8)  # and of each platform order, "<app>/<its id>"
_PARKING = Parking(parked)


def source_of(app: str) -> str:
    return f"{PLATFORM_SOURCE_PREFIX}{app}"


async def seen(tx: Tx, app: str, push_id: str, fingerprint: str, sign: str) -> Decision | None:
    """None for a push id and a signature (upper-case) not accepted before; ``replayed`` for
    another push under a push id taken; else, for this very push sent again (its
    :func:`~services.platform.domain.signing.fingerprint`: a platform that did not see our
    answer sends it again), what it was first answered (:func:`answered_again`); and
    ``duplicate`` for a signature taken under another push id (the same signed string,
    re-split: a captured push, not the platform's)."""
    found = await tx.conn.execute(
        select(pushes.c.push_id, pushes.c.fingerprint, pushes.c.answer).where(
            pushes.c.app == app, or_(pushes.c.push_id == push_id, pushes.c.sign == sign)
        )
    )
    rows = found.all()
    if not rows:
        return None
    same_id = [row for row in rows if row.push_id == push_id]
    if not same_id:  # a signature taken: a captured push re-split, told nothing more
        return Decision("duplicate")
    if same_id[0].fingerprint != fingerprint:
        return Decision("replayed")
    return answered_again(same_id[0].answer)


def answered_again(answer: dict[str, Any] | None) -> Decision:
    """What a push sent again is answered, given what it was first (``answer``, None on a row
    from before 2026-12-07): ``duplicate`` for one placed then (``accepted``) or before, and
    for an old row; else its first answer, ``problem`` with its kinds and fields at fault, or
    ``ignored``: a platform whose first answer was lost (a timeout) was told ``duplicate``,
    read as placed, and never learnt of the problem, a phone of its own to send, say."""
    if answer is None or answer["status"] in ("accepted", "duplicate"):
        return Decision("duplicate")
    kinds = tuple(answer.get("problems") or ())
    return Decision(answer["status"], kinds, tuple(answer.get("errors") or ()))


async def lock_platform_order(tx: Tx, app: str, platform_order_id: str) -> None:
    """Hold the platform order's advisory lock for the rest of the transaction: the pushes
    of one order are decided one after the other, each seeing what the one before committed.
    Decided at once, a push finding a status that means nothing for an order placed (shipped)
    read the order as never placed while another was placing it, and opened a problem that
    outlived the placing (a cancellation, or a problem's closing, was missed the same way)."""
    await _PLATFORM_ORDER_LOCKS.lock(tx, [f"{app}/{platform_order_id}"])


async def accept_push(
    tx: Tx, app: str, push_id: str, fingerprint: str, sign: str, order: PlatformOrder
) -> Decision:
    """Act on a verified push (``sign``: its signature, upper-case), given the order as the
    platform has it now (holding the platform order's lock: :func:`lock_platform_order`)."""
    fresh = await tx.conn.execute(
        pg_insert(pushes)
        .values(app=app, push_id=push_id, fingerprint=fingerprint, sign=sign)
        .on_conflict_do_nothing()
        .returning(pushes.c.push_id)
    )
    if fresh.first() is None:  # taken meanwhile: the same push sent twice at once, or not
        return await seen(tx, app, push_id, fingerprint, sign) or Decision("replayed")
    decision = await decide(tx, app, order)
    answer = {
        "status": decision.outcome,
        "problems": list(decision.problems),
        "errors": list(decision.errors),
    }
    await tx.conn.execute(
        update(pushes).where(pushes.c.app == app, pushes.c.push_id == push_id).values(answer=answer)
    )
    return decision


async def decide(tx: Tx, app: str, order: PlatformOrder) -> Decision:
    """Act on the order as the platform has it now, whether a push or operations asked
    (``caravan platform refetch``), holding the platform order's lock."""
    await lock_platform_order(tx, app, order.order_id)
    key = (platform_orders.c.app == app) & (platform_orders.c.platform_order_id == order.order_id)
    found = select(platform_orders.c.order_id, platform_orders.c.placed).where(key)
    placed = (await tx.conn.execute(found)).first()
    means = meaning(order.status)
    if means in ("cancelled", "refunding") and placed is not None:
        outcome = await _our_outcome(tx, app, order)
        if outcome == "cancelled":  # the platform followed our outcome; a mapping stays wrong
            await resolve_problems(tx, app, order.order_id, keep={"mapped_to_unknown_sku"})
            return Decision("ignored")
        ours = placed.order_id or NOT_NUMBERED
        problem = undone_on_platform(order, ours, confirmed=outcome == "confirmed")
        return await found_problems(tx, app, order.order_id, [problem])
    if means is None or means == "fulfilment":
        ours = None if placed is None else placed.order_id or NOT_NUMBERED
        return await _moved_on(tx, app, order, ours)
    if means != "paid":
        log.info("platform order %s/%s is %s; nothing to do", app, order.order_id, order.status)
        if means == "cancelled":  # final: a paid read decided after this one is older
            stmt = pg_insert(closed_unplaced).values(
                app=app, platform_order_id=order.order_id, status=order.status
            )
            update_ = {"status": stmt.excluded.status, "seen_at": func.now()}
            await tx.conn.execute(stmt.on_conflict_do_update(index_elements=KEY, set_=update_))
            await resolve_problems(tx, app, order.order_id)  # nothing left to place: moot
        return Decision("ignored")
    if placed is not None:  # what kept it from being placed, or from being read, is moot
        await resolve_problems(tx, app, order.order_id, keep=STILL_OPEN_ONCE_PLACED)
        changes = [] if placed.placed is None else changes_since(placed.placed, order)
        if changes:  # placed once: a change is not applied, and not to be lost unsaid
            ours = placed.order_id or NOT_NUMBERED
            problem = changed_after_placed(order, ours, changes)
            return await found_problems(tx, app, order.order_id, [problem])
        return Decision("duplicate")
    closed = await tx.conn.scalar(
        select(closed_unplaced.c.status).where(_closed(app, order.order_id))
    )
    if closed is not None:
        problem = paid_after_cancelled(order, closed)
        return await found_problems(tx, app, order.order_id, [problem])
    skus, buyers = await _mappings(tx, app, {item.sku for item in order.items}, order.buyer.id)
    request = to_request(order, skus, buyers)
    if isinstance(request, list):
        # Those of an earlier push that are mended (a mapping added since) are not listed.
        await resolve_problems(tx, app, order.order_id, keep={p.kind for p in request})
        return await found_problems(tx, app, order.order_id, request)
    event_id = await tx.conn.scalar(
        pg_insert(platform_orders)
        .values(
            app=app,
            platform_order_id=order.order_id,
            request_event_id="",
            placed=as_placed(order),
        )
        .on_conflict_do_nothing()
        .returning(platform_orders.c.platform_order_id)
    )
    if event_id is None:  # placed meanwhile (pushes hold the order's lock: not by a push)
        return Decision("duplicate")
    event = await tx.emit(request, source=source_of(app), correlation_id=request.order_ref)
    paid = PlatformOrderPaid(order_ref=request.order_ref, source=source_of(app))
    await tx.emit(paid, correlation_id=request.order_ref)
    await tx.conn.execute(update(platform_orders).where(key).values(request_event_id=event.id))
    await resolve_problems(tx, app, order.order_id)
    log.info("platform order %s/%s placed (event %s)", app, order.order_id, event.id)
    return Decision("accepted")


KEY = [closed_unplaced.c.app, closed_unplaced.c.platform_order_id]


def _closed(app: str, platform_order_id: str) -> Any:
    c = closed_unplaced.c
    return (c.app == app) & (c.platform_order_id == platform_order_id)


async def forget_closed(tx: Tx, app: str, platform_order_id: str) -> None:
    """Forget that an order was found cancelled before it was placed (its problems resolved
    by hand: operations found it paid all the same), so that a push may place it."""
    await tx.conn.execute(delete(closed_unplaced).where(_closed(app, platform_order_id)))


STILL_OPEN_ONCE_PLACED = {
    "mapped_to_unknown_sku",
    "cancelled_on_platform",
    "fulfilled_after_cancelled",
    "refund_requested",
    "rejected",
    "unknown_status",
    "changed_after_placed",
}
"""The problems of an order placed with us that a push does not make moot (an unknown status
of a placed order is for operations to close, once they know what it meant; a change not
applied, once they settled it, even if the platform changes the order back; a mapping to a
SKU inventory does not have, once they mended it)."""


async def _moved_on(tx: Tx, app: str, order: PlatformOrder, ours: str | None) -> Decision:
    """A status the adapter does not know or a step of fulfilment, for an order placed with
    us (``ours``, our order id, or "not numbered yet") or never placed (None). One a platform
    moves a paid order on to as it is fulfilled (shipped, finished: ``fulfilment`` in
    :data:`~services.platform.domain.orders.STATUSES`) is past anything
    the adapter does for an order placed already (and what kept it from being read is moot);
    any other, or any for an order never placed, is a problem for operations: a refund or a
    closure of a sale that goes on here, or an order whose payment cannot be told; and so is a
    step of fulfilment of an order we cancelled (goods going out that we hold nothing for)."""
    if ours is not None and meaning(order.status) == "fulfilment":
        if await _our_outcome(tx, app, order) == "cancelled":
            problem = fulfilled_after_cancelled(order, ours)
            return await found_problems(tx, app, order.order_id, [problem])
        log.info("platform order %s/%s is %r; placed already", app, order.order_id, order.status)
        await resolve_problems(tx, app, order.order_id, keep=STILL_OPEN_ONCE_PLACED)
        return Decision("ignored")
    return await found_problems(tx, app, order.order_id, [unknown_status(order, ours)])


OUR_OUTCOME = (
    select(callbacks.c.outcome)
    .where(
        callbacks.c.app == bindparam("app"),
        callbacks.c.platform_order_id == bindparam("platform_order_id"),
    )
    .limit(1)
)
"""How our order for ``:app``'s ``:platform_order_id`` ended (confirmed or cancelled), as its
callback tells the platform (through ``callbacks_platform_order``); no row while it has not."""


async def _our_outcome(tx: Tx, app: str, order: PlatformOrder) -> str | None:
    """How our order ended (its callback says so; a platform cancels its order when told,
    and pushes that change), or None while it has not."""
    return await tx.conn.scalar(OUR_OUTCOME, {"app": app, "platform_order_id": order.order_id})


async def resolve_problems(
    tx: Tx, app: str, platform_order_id: str, keep: Iterable[str] = ()
) -> list[str]:
    """Mark the order's open problems resolved, but for those of the kinds in ``keep``;
    returns the kinds resolved."""
    rows = await tx.conn.execute(
        update(problems)
        .where(
            problems.c.app == app,
            problems.c.platform_order_id == platform_order_id,
            problems.c.resolved_at.is_(None),
            problems.c.kind.not_in(list(keep)),
        )
        .values(resolved_at=func.now())
        .returning(problems.c.kind)
    )
    return sorted(r.kind for r in rows)


async def order_known(tx: Tx, app: str, platform_order_id: str) -> bool:
    """Whether the adapter keeps any row of ``app``'s ``platform_order_id``: placed through it,
    a problem of it (open or resolved), or seen cancelled before it was placed (kept for
    ``bootstrap.closed_kept_seconds``). A push that found it unpaid keeps none."""
    of = {
        table: (table.c.app == app) & (table.c.platform_order_id == platform_order_id)
        for table in (platform_orders, problems, closed_unplaced)
    }
    found = select(or_(*(select(t.c.app).where(key).exists() for t, key in of.items())))
    return bool(await tx.conn.scalar(found))


async def _mappings(
    tx: Tx, app: str, platform_skus: Iterable[str], buyer: str | None = None
) -> tuple[dict[str, SkuMapping], dict[str, BuyerMapping]]:
    """The mappings of platform SKUs and of a buyer (none if None). The SKUs go once each, as
    one array (``= ANY``): an ``IN`` list takes a parameter each, and asyncpg refuses more
    than 32,767 (an order's items are not bounded: the platform's own may merge into few
    lines)."""
    rows = await tx.conn.execute(
        select(mappings.c.kind, mappings.c.external_id, mappings.c.value).where(
            mappings.c.app == app,
            ((mappings.c.kind == "sku") & driver.any_of(mappings.c.external_id))
            | ((mappings.c.kind == "buyer") & (mappings.c.external_id == buyer)),
        ),
        {"keys": sorted(set(platform_skus))},
    )
    skus: dict[str, SkuMapping] = {}
    buyers: dict[str, BuyerMapping] = {}
    for kind, external_id, value in rows:
        if kind == "sku":
            skus[external_id] = SkuMapping.model_validate(value)
        else:
            buyers[external_id] = BuyerMapping.model_validate(value)
    return skus, buyers


async def record_problems(tx: Tx, app: str, platform_order_id: str, found: list[Problem]) -> None:
    """Open (or count again) each of ``found`` for operations."""
    for problem in found:
        log.warning("platform order %s/%s: %s", app, platform_order_id, problem.detail)
        tx.after_commit(PROBLEMS.labels(app, problem.kind).inc)
        stmt = pg_insert(problems).values(
            app=app, platform_order_id=platform_order_id, kind=problem.kind, detail=problem.detail
        )
        await tx.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[problems.c.app, problems.c.platform_order_id, problems.c.kind],
                set_={
                    "detail": stmt.excluded.detail,
                    "occurrences": problems.c.occurrences + 1,
                    "last_seen_at": func.now(),
                    "resolved_at": None,
                },
            )
        )


async def found_problems(
    tx: Tx, app: str, platform_order_id: str, found: list[Problem]
) -> Decision:
    """Open (or count again) ``found`` for operations: a ``problem`` naming their kinds."""
    await record_problems(tx, app, platform_order_id, found)
    errors = tuple(e for p in found for e in p.errors)
    return Decision("problem", tuple(dict.fromkeys(p.kind for p in found)), errors)


def concerns_platform(parsed: Parsed) -> bool:
    """Whether an order event may be the platform's: one that names its source (every
    ``order.placed`` and ``order.rejected``; ``order.confirmed`` and ``order.cancelled``
    since 2026-12-04) and the platform did not place is skipped unclaimed (most orders come
    from the storefronts: a transaction, an inbox row and a look-up each for nothing); an
    ended order that names none is looked up (``prefetch_order_events``)."""
    data = parsed.data
    if isinstance(data, OrderPlaced | OrderRejected | OrderConfirmed | OrderCancelled):
        return data.source is None or platform_app(data.source) is not None
    return True


async def on_order_rejected(tx: Tx, parsed: Parsed) -> None:
    """The orders service refused the request the adapter published, although the push was
    accepted: a ``rejected`` problem for operations, as nothing else would tell (the
    platform's order would wait for a callback that never comes). A rejection caused by
    another request (one naming the platform's source elsewhere) is none of the adapter's."""
    data = parsed.data
    assert isinstance(data, OrderRejected)
    app = platform_app(data.source)
    assert app is not None
    if len(app) > 64 or not re.fullmatch(ORDER_REF_PATTERN, data.order_ref):
        log.warning("order.rejected of %r names no order the adapter placed", data.source)
        return  # not ours: the adapter publishes only order refs it checked, for its apps
    ours = await tx.conn.scalar(
        select(platform_orders.c.request_event_id).where(
            platform_orders.c.app == app, platform_orders.c.platform_order_id == data.order_ref
        )
    )
    if ours is None or ours != parsed.envelope.causationid:
        log.warning("order.rejected of %s/%s answers no request of ours", app, data.order_ref)
        return  # another's request naming the platform's source (refused for it) or order
    said = "; ".join(f"{e.field}: {e.message}" for e in data.errors)
    await record_problems(tx, app, data.order_ref, [rejected(app, said, data.order_id)])


async def on_order_placed(tx: Tx, parsed: Parsed) -> None:
    """Remember the order id of a platform order we placed (its outcome names only that);
    then queue the callback of its outcome if that came first."""
    data = parsed.data
    assert isinstance(data, OrderPlaced)
    app = platform_app(data.source)
    assert app is not None
    await _LOCKS.lock(tx, [data.order_id])
    await _PARKING.take(tx, [data.order_id])
    rows = await tx.conn.execute(
        update(platform_orders)
        .where(
            platform_orders.c.app == app,
            platform_orders.c.platform_order_id == data.order_ref,
        )
        .values(order_id=data.order_id)
        .returning(platform_orders.c.app, platform_orders.c.platform_order_id)
    )
    for row in rows:
        tx.identity[PLATFORM_ORDER, data.order_id] = (row.app, row.platform_order_id)
    for early in await _PARKING.release(tx, data.order_id):
        await on_order_ended(tx.caused_by(early.envelope), early)


PLATFORM_ORDER, UNPLACED = "platform.order", "platform.unplaced"
"""Identity-map kinds, by our order id: the (app, platform order id) of one of our orders,
None if not the platform's, or not placed yet; True for one whose order ref a platform order
not placed yet has (its outcome waits for its ``order.placed``)."""


# Our orders, and the platform orders not placed yet that have one of the refs.
PLATFORM_ORDERS = select(
    platform_orders.c.order_id, platform_orders.c.app, platform_orders.c.platform_order_id
).where(
    or_(
        driver.any_of(platform_orders.c.order_id),
        and_(
            platform_orders.c.order_id.is_(None),
            driver.any_of(platform_orders.c.platform_order_id, "refs"),
        ),
    )
)


async def _load_platform_orders(
    tx: Tx, ended: Iterable[OrderConfirmed | OrderCancelled], placed: Sequence[str] = ()
) -> None:
    """Which of these ended orders are the platform's (in one statement), and which may be
    but are not placed yet: those are locked, with the orders ``placed`` (in one statement),
    and looked up again (placed meanwhile?)."""
    refs = {d.order_id: d.order_ref for d in ended}
    todo = tx.unknown(PLATFORM_ORDER, refs)
    found: dict[str, tuple[str, str]] = {}
    waiting: list[str] = []
    if todo:
        asked = sorted({refs[order_id] for order_id in todo})
        rows = await driver.fetch(tx.conn, PLATFORM_ORDERS, keys=todo, refs=asked)
        found = {r.order_id: (r.app, r.platform_order_id) for r in rows if r.order_id}
        unplaced = {r.platform_order_id for r in rows if r.order_id is None}
        waiting = [o for o in todo if o not in found and refs[o] in unplaced]
    await _LOCKS.lock(tx, [*waiting, *placed])
    if waiting:
        again = await driver.fetch(tx.conn, PLATFORM_ORDERS, keys=waiting, refs=[])
        found |= {r.order_id: (r.app, r.platform_order_id) for r in again}
    tx.remember(PLATFORM_ORDER, todo, found)
    tx.remember(UNPLACED, waiting, {o: True for o in waiting if o not in found})


async def prefetch_order_events(tx: Tx, batch: Sequence[Parsed]) -> None:
    """Look up, in one statement, which of the batch's ended orders came from the platform;
    lock those that may but are not placed yet and the platform's orders placed, and take
    the outcomes parked for those."""
    ended = [p.data for p in batch if isinstance(p.data, OrderConfirmed | OrderCancelled)]
    placed = [p.data.order_id for p in batch if isinstance(p.data, OrderPlaced)]
    await _load_platform_orders(tx, ended, placed)
    await _PARKING.take(tx, placed)


async def on_order_ended(tx: Tx, parsed: Parsed) -> None:
    """Queue the status callback of a platform order's terminal event (once per event), or
    park the event until the order's ``order.placed`` comes."""
    data = parsed.data
    assert isinstance(data, OrderConfirmed | OrderCancelled)
    await _load_platform_orders(tx, [data])
    found: tuple[str, str] | None = tx.identity[PLATFORM_ORDER, data.order_id]
    if found is None:
        if tx.identity.get((UNPLACED, data.order_id)):
            _PARKING.park(tx, data.order_id, Topic.ORDER_EVENTS, parsed)
        return
    app, platform_order_id = found
    cancelled = isinstance(data, OrderCancelled)
    if isinstance(data, OrderCancelled) and data.reason == "unknown_sku":
        await _mapped_to_unknown_sku(tx, app, platform_order_id, data.order_id)
    await tx.conn.execute(
        pg_insert(callbacks)
        .values(
            event_id=parsed.envelope.id,
            app=app,
            platform_order_id=platform_order_id,
            order_id=data.order_id,
            outcome="cancelled" if cancelled else "confirmed",
            reason=data.reason if isinstance(data, OrderCancelled) else None,
            trace_headers=current_trace_headers() or None,
        )
        .on_conflict_do_nothing()
    )
    tx.signal(CALLBACKS_DUE)


async def _mapped_to_unknown_sku(tx: Tx, app: str, platform_order_id: str, order_id: str) -> None:
    """A problem for a platform order we cancelled ``unknown_sku``: the adapter published only
    SKUs the app's mappings name, so one of those is no product of inventory's, which nothing
    checked when it was mapped; told only ``cancelled``, operations would not know that the
    mapping is wrong (:func:`~services.platform.domain.orders.mapped_to_unknown_sku`). Its
    platform SKUs are those placed (``as_placed``), named with their mappings now."""
    placed = await tx.conn.scalar(
        select(platform_orders.c.placed).where(
            platform_orders.c.app == app, platform_orders.c.platform_order_id == platform_order_id
        )
    )
    items = None if placed is None else list(placed["items"])
    mapped = None
    if items is not None:
        skus, _ = await _mappings(tx, app, items)
        mapped = {sku: skus[sku].sku if sku in skus else None for sku in items}
    problem = mapped_to_unknown_sku(app, order_id, mapped)
    await record_problems(tx, app, platform_order_id, [problem])


OPEN_BY_KIND = (
    select(problems.c.kind, func.count())
    .where(problems.c.resolved_at.is_(None))
    .group_by(problems.c.kind)
)
"""Open problems by kind (through ``problems_open``: the table keeps those resolved)."""


async def sample_problems(tx: Tx) -> None:
    """Open problems by kind, for ``/metrics``."""
    counts: dict[str, int] = dict((await tx.conn.execute(OPEN_BY_KIND)).all())
    for kind in get_args(ProblemKind):
        OPEN_PROBLEMS.labels(kind).set(counts.get(kind, 0))

"""Use cases of the inventory service: reserve on ``order.placed``, release on
``order.cancelled``, sell on ``order.confirmed``, report overdue holds (``stock.expired``),
receive and adjust lots. Each runs inside one transaction; the lot counters change only by
the moves of ``domain.ledger``."""

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Column, select

from services.inventory.adapters import queries
from services.inventory.adapters.repository import Correction, StockRepository, StoredLot
from services.inventory.adapters.tables import products, sellers
from services.inventory.domain.ledger import (
    adjust_move,
    correction_refused,
    held_until,
    on_cancel,
    on_confirm,
    release_moves,
    reserve_moves,
    sell_moves,
)
from services.inventory.domain.stock import Rejected, allocate
from shared import days
from shared.auth import audit
from shared.db import driver
from shared.events.inventory import (
    LotTake,
    ReservedLine,
    StockExpired,
    StockRejected,
    StockReleased,
    StockReserved,
    StockSold,
)
from shared.events.orders import OrderCancelled, OrderConfirmed, OrderPlaced, PaymentRequest
from shared.events.registry import Parsed
from shared.ids import new_id
from shared.logs import working_for
from shared.messaging.uow import Tx
from shared.seed import Loaded, LotSeed, SeedFile, named

log = logging.getLogger(__name__)


def _day(order: OrderPlaced, parsed: Parsed) -> date:
    """The marketplace's day the order was placed on: the one its lots are in season on."""
    return days.day_of(order.placed_at or parsed.envelope.time)


async def prefetch_order_events(tx: Tx, batch: Sequence[Parsed]) -> None:
    """Load and lock, in a few statements, what a batch of order events will change."""
    placed = {
        p.data.order_id: (_day(p.data, p), [line.sku for line in p.data.lines])
        for p in batch
        if isinstance(p.data, OrderPlaced)
    }
    ended = [p.data.order_id for p in batch if isinstance(p.data, OrderCancelled | OrderConfirmed)]
    await StockRepository(tx).prepare(placed, ended)


async def on_order_placed(tx: Tx, parsed: Parsed, hold: timedelta) -> None:
    """Hold the order's lines (``stock.reserved``, saying until when: ``held_until``) or say
    why it cannot be served (``stock.rejected``)."""
    order = parsed.data
    assert isinstance(order, OrderPlaced)
    repo = StockRepository(tx)
    if await repo.reservation_status(order.order_id) is not None:
        return
    merged: dict[str, int] = {}
    for line in order.lines:
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    lines = list(merged.items())
    catalogue = await repo.products(sku for sku, _ in lines)
    day = _day(order, parsed)
    candidates = await repo.lock_lots(catalogue, day)
    decision = allocate(lines, set(catalogue), candidates, day)
    if isinstance(decision, Rejected):
        # Only the lots that can serve were locked: why the others cannot is read of them all.
        seasons = await repo.seasons(catalogue, day)
        decision = allocate(lines, set(catalogue), candidates, day, seasons)
    if isinstance(decision, Rejected):
        if await repo.create_reservation(order.order_id, "rejected", []):
            await tx.emit(
                StockRejected(order_id=order.order_id, reason=decision.reason, skus=decision.skus)
            )
        return
    until = held_until(datetime.now(UTC), hold, order.deadline_at)
    if not await repo.create_reservation(order.order_id, "reserved", decision.takes, until):
        return
    await repo.apply(reserve_moves(decision.takes))
    reserved = [
        ReservedLine(
            sku=sku,
            quantity=quantity,
            unit_price_fen=catalogue[sku].unit_price_fen,
            seller_id=catalogue[sku].seller_id,
            lots=[
                LotTake(lot_id=t.lot_id, quantity=t.quantity)
                for t in decision.takes
                if t.sku == sku
            ],
        )
        for sku, quantity in lines
    ]
    await tx.emit(
        StockReserved(
            order_id=order.order_id,
            buyer_id=order.buyer_id,
            payment=order.payment or PaymentRequest(method="prepaid"),
            lines=reserved,
            total_fen=sum(line.unit_price_fen * line.quantity for line in reserved),
            source=order.source,
            order_ref=order.order_ref,
            held_until=until,
        )
    )


async def on_order_cancelled(tx: Tx, parsed: Parsed) -> None:
    """Return exactly what the order held to the same lots (spoiled if the lot has expired)."""
    data = parsed.data
    assert isinstance(data, OrderCancelled)
    repo = StockRepository(tx)
    action = on_cancel(await repo.reservation_status(data.order_id))
    if action == "tombstone":
        await repo.create_reservation(data.order_id, "released", [])
        return
    if action == "ignore":
        return
    moves = release_moves(await repo.held_lines(data.order_id), days.today())
    await repo.apply(moves)
    await repo.set_status(data.order_id, "released")
    await tx.emit(
        StockReleased(
            order_id=data.order_id,
            returned=sum(m.available for m in moves),
            spoiled=sum(m.spoiled for m in moves),
        )
    )


async def on_order_confirmed(tx: Tx, parsed: Parsed) -> None:
    """The held stock becomes sold."""
    data = parsed.data
    assert isinstance(data, OrderConfirmed)
    repo = StockRepository(tx)
    if not on_confirm(await repo.reservation_status(data.order_id)):
        log.warning("order %s confirmed without a held reservation", data.order_id)
        return
    await repo.apply(sell_moves(await repo.held_lines(data.order_id)))
    await repo.set_status(data.order_id, "sold")
    await tx.emit(StockSold(order_id=data.order_id))


async def report_overdue_holds(tx: Tx, hold: timedelta, limit: int = 200) -> int:
    """Emit ``stock.expired`` once for each hold older than ``hold``; returns how many.

    Inventory keeps the stock held: orders cancels the order (``expired``) if it is still
    pending, and that cancellation releases the stock. Safe with several instances: each
    hold is locked (others skipped) and marked in the same transaction as its event. Each
    report continues the trace of the event that made the hold (the order's), its log lines
    tagged with the order id.
    """
    repo = StockRepository(tx)
    due = await repo.overdue_holds(hold, limit)
    if not due:
        return 0
    await repo.mark_expiry_notified([order_id for order_id, _ in due])
    for order_id, trace_headers in due:
        with working_for(trace_headers, "inventory hold expiry", order_id):
            await tx.emit(StockExpired(order_id=order_id))
    return len(due)


class SeedRefused(Exception):
    """A seed file refused whole, for ``reasons`` (each a line)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class DanglingSeed(SeedRefused, LookupError):
    """A seed file's products name sellers, or its lots SKUs, that neither the file nor the
    database has."""


class LotTaken(SeedRefused, ValueError):
    """A seed file's lots reuse ids of lots received with other terms."""


def other_terms(stored: LotSeed | None, lot: LotSeed) -> str:
    """What of ``lot`` differs from the lot ``stored`` under its id, each "field <stored>
    stored, <lot's> given" ("" if nothing does, or nothing is stored): a lot is received
    once, on its terms."""
    if stored is None:
        return ""
    given = lot.model_dump(mode="json")
    return ", ".join(
        f"{field} {value} stored, {given[field]} given"
        for field, value in stored.model_dump(mode="json").items()
        if value != given[field]
    )


async def _unknown(tx: Tx, column: Column[str], wanted: set[str]) -> set[str]:
    """Those of ``wanted`` that ``column`` does not hold (asked as one array, as ``_rows``)."""
    if not wanted:
        return set()
    found = await tx.conn.execute(
        select(column).where(driver.any_of(column)), {"keys": sorted(wanted)}
    )
    return wanted - set(found.scalars())


async def load_seed(tx: Tx, seed: SeedFile) -> Loaded:
    """Upsert sellers and products; add lots that are new, and say which were not (a lot's
    counts change by adjustments, not by loading it again). Loading twice changes nothing.
    A product whose seller, or a lot whose SKU, is neither in the file nor already loaded
    fails the whole file (:class:`DanglingSeed`, naming every one) before anything is written,
    as does a lot whose id holds a lot with other terms (:class:`LotTaken`, naming each and
    what differs): a new harvest left out under an old lot's id would be booked, by the
    adjustment advised, under the old lot's dates. A lot corrected since is the same lot on
    the terms it had before a correction (:func:`corrected_since`): left as corrected, said.
    What the file adds or changes is written to the audit trail, as a change through the API
    is (``seller.set``, ``product.set``, ``lot.add``), and told (:class:`Loaded`)."""
    sellers_named = {p.seller_id for p in seed.products} - {s.id for s in seed.sellers}
    skus_named = {lot.sku for lot in seed.lots} - {p.sku for p in seed.products}
    no_seller = await _unknown(tx, sellers.c.seller_id, sellers_named)
    no_sku = await _unknown(tx, products.c.sku, skus_named)
    dangling = [
        f"product {p.sku}: no seller {p.seller_id}"
        for p in seed.products
        if p.seller_id in no_seller
    ] + [f"lot {lot.lot_id}: no product {lot.sku}" for lot in seed.lots if lot.sku in no_sku]
    if dangling:
        raise DanglingSeed(dangling)
    repo = StockRepository(tx)
    taken, corrected = await reused_lot_ids(repo, seed.lots)
    if taken:
        raise LotTaken(taken)
    who, by = audit.os_actor(), {"by": "caravan seed"}
    set_sellers = {
        s.id: {"name": s.name, "county": s.county, "phone": s.phone} for s in seed.sellers
    }
    new_sellers, changed_sellers = await _set(
        tx, sellers.c.seller_id, set_sellers, "seller.set", who, by
    )
    set_products = {
        p.sku: {"seller_id": p.seller_id, "unit_price_fen": p.unit_price_fen, "name": p.name}
        for p in seed.products
    }
    new_products, changed_products = await _set(
        tx, products.c.sku, set_products, "product.set", who, by
    )
    new_lots = await repo.add_lots(seed.lots)
    before = [lot.lot_id for lot in seed.lots if lot.lot_id not in new_lots]
    for lot in seed.lots:
        if lot.lot_id in new_lots:
            after = lot.model_dump(mode="json")
            audit.record_later(tx, who, "lot.add", lot.lot_id, after=after, detail=by)
    return Loaded(
        added={"sellers": new_sellers, "products": new_products, "lots": new_lots},
        changed={"sellers": changed_sellers, "products": changed_products},
        kept={"lots": ([loaded_before(before)] if before else []) + corrected},
    )


async def reused_lot_ids(
    repo: StockRepository, lots: Sequence[LotSeed]
) -> tuple[list[str], list[str]]:
    """The lots of ``lots`` whose ids hold a lot of other terms, in words: those refused
    (terms it never had, each saying what differs, and how the lot was corrected since it
    was received, if it was) and those that are the same lot all the same, on terms it had
    before a correction (:func:`corrected_since`), left as corrected. The one rule of
    ``caravan seed`` and ``POST /lots``."""
    now = await repo.lot_terms([lot.lot_id for lot in lots])
    stored = {lot_id: lot.first for lot_id, lot in now.items()}
    differ = {lot.lot_id: d for lot in lots if (d := other_terms(stored.get(lot.lot_id), lot))}
    history = await repo.corrections(list(differ)) if differ else {}
    taken, corrected = [], []
    for lot in lots:
        if lot.lot_id not in differ:
            continue
        corrections = history.get(lot.lot_id, [])
        since = corrected_since(stored[lot.lot_id], corrections, lot)
        if since is not None:
            corrected.append(
                f"lot {lot.lot_id} is as the file says before {said(since)}: left as corrected"
            )
        elif corrections and _terms_differ(stored[lot.lot_id], lot):
            taken.append(
                f"lot {lot.lot_id} exists with other terms: {differ[lot.lot_id]} (corrected"
                f" since it was received, {said(corrections)}: give its terms as corrected)"
            )
        else:
            taken.append(
                f"lot {lot.lot_id} exists with other terms: {differ[lot.lot_id]}: a new harvest"
                f" takes a new lot id; {ways_to_mend(now[lot.lot_id], lot)}"
            )
    return taken, corrected


CORRECTED_BY = {"sku": "--sku", "available_from": "--from", "best_before": "--best-before"}
"""The terms of a lot that ``caravan inventory correct-lot`` sets right, and its options."""


def _terms_differ(stored: LotSeed, lot: LotSeed) -> bool:
    """Whether ``lot`` gives ``stored`` other terms than its count: those a correction sets
    (a corrected lot's file giving its terms as corrected and another count is a stocktake,
    told the adjustment, not to give the terms it gives)."""
    return any(getattr(stored, name) != getattr(lot, name) for name in CORRECTED_BY)


def ways_to_mend(stored: StoredLot, lot: LotSeed) -> str:
    """What mends a lot ``lot`` refused as ``stored`` holds its id on other terms, other
    than a new lot id, in commands: a term mistyped when it was received is corrected (and
    the file then loads); its count changes by an adjustment from the count it has now (the
    adjustments made since it was received counted: the file's quantity is what the lot
    counts after the adjustment advised), the file keeping the quantity it was received
    with; a count the lot has already, after its adjustments, needs none."""
    first = stored.first
    given = lot.model_dump(mode="json")
    terms = " ".join(
        f"{option} {given[name]}"
        for name, option in CORRECTED_BY.items()
        if getattr(first, name) != getattr(lot, name)
    )
    ways = []
    if terms:
        ways.append(
            "terms mistyped when it was received are set right by `caravan inventory"
            f" correct-lot {lot.lot_id} {terms} --reason R`"
        )
    adjusted = stored.received - first.quantity
    since = f" ({first.quantity} received, adjusted {adjusted:+d} since)" if adjusted else ""
    as_received = f"its quantity in the file staying {first.quantity} (as received)"
    if first.quantity != lot.quantity and stored.received == lot.quantity:
        ways.append(f"its count is {lot.quantity} already{since}: nothing to adjust, {as_received}")
    elif first.quantity != lot.quantity:
        now = f", {stored.received} now{since}," if adjusted else ""
        ways.append(
            f"its count{now} changes by `caravan inventory adjust {lot.lot_id} --delta"
            f" {lot.quantity - stored.received} --reason R`, {as_received}"
        )
    return "; ".join(ways)


def corrected_since(
    stored: LotSeed, corrections: Sequence[Correction], lot: LotSeed
) -> list[Correction] | None:
    """The corrections made since the lot ``stored`` (as it is now, its ``corrections``
    oldest first) had the terms of ``lot``, if it had them before one (a seed file written
    before a correction, loaded again); None if it never had them."""
    terms = stored
    for i in reversed(range(len(corrections))):
        earlier = {**terms.model_dump(mode="json"), **corrections[i].before}
        terms = LotSeed.model_validate(earlier)
        if not other_terms(terms, lot):
            return list(corrections[i:])
    return None


def said(corrections: Sequence[Correction]) -> str:
    """Corrections in words: each one's time (to the second, its zone said), actor, and the
    terms it changed, from what to what."""
    return "; ".join(
        f"its correction of {c.at.isoformat(timespec='seconds')} by {c.actor} ("
        + ", ".join(f"{name} {old} -> {c.after.get(name)}" for name, old in c.before.items())
        + ")"
        for c in corrections
    )


def loaded_before(lot_ids: list[str]) -> str:
    """The lots of a seed file loaded before, left as they are, in one line (:func:`named`:
    a centre's file of a season's hundreds of lots, loaded again, printed a line for each)."""
    return named("lots loaded before, left as they are", lot_ids)


async def _set(
    tx: Tx,
    key: Column[str],
    wanted: Mapping[str, Mapping[str, object]],
    action: str,
    who: str,
    detail: dict[str, Any],
) -> tuple[set[str], set[str]]:
    """Upsert ``wanted`` (each row's values by its key) into ``key``'s table, each row that
    it adds or changes written to the audit trail as ``action``; the keys it added, and the
    keys whose rows it changed."""
    known = await _rows(tx, key, list(wanted))
    written = {id_: values for id_, values in wanted.items() if known.get(id_) != values}
    rows = [{key.name: id_, **values} for id_, values in written.items()]
    await driver.upsert(tx.conn, key.table, key.name, rows)
    for id_, values in written.items():
        before = known.get(id_)
        audit.record_later(tx, who, action, id_, before=before, after=values, detail=detail)
    return set(written) - set(known), set(written) & set(known)


async def _rows(tx: Tx, key: Column[str], wanted: list[str]) -> dict[str, dict[str, object]]:
    """The rows of ``key``'s table whose key is one of ``wanted``, by key, without it (what a
    seed file sets: the audit trail's "before"). The keys go as one array (``= ANY``): an
    ``IN`` list takes a parameter each, and asyncpg refuses more than 32,767."""
    found = await tx.conn.execute(select(key.table).where(driver.any_of(key)), {"keys": wanted})
    return {
        row[key.name]: {k: v for k, v in row.items() if k != key.name} for row in found.mappings()
    }


class UnknownSku(LookupError):
    """No product has this SKU."""


class UnknownLot(LookupError):
    """No lot has this id."""


class Conflict(ValueError):
    """The id is taken by something else (another lot, another adjustment)."""


class Refused(ValueError):
    """The lot cannot take this change now (its stock is held by orders, or sold)."""


class DatesOutOfOrder(ValueError):
    """A lot's ``best_before`` would be before its ``available_from``."""


async def add_lot(tx: Tx, lot: LotSeed) -> bool:
    """Receive a harvest lot; True if new, False if the very same lot was received before
    (or a lot corrected since, on terms it had before a correction: left as corrected, as
    ``caravan seed`` leaves it). A lot id holding a lot of other terms is a :class:`Conflict`."""
    repo = StockRepository(tx)
    if not await repo.products([lot.sku]):
        raise UnknownSku(lot.sku)
    if await repo.add_lot(lot):
        return True
    taken, _ = await reused_lot_ids(repo, [lot])
    if taken:
        raise Conflict(taken[0])
    return False


async def lock_lot(tx: Tx, lot_id: str) -> None:
    """Lock a lot for a change in this transaction: what is read of it from now on (the
    audit trail's *before*) is what the change starts from, not what a reservation committed
    in between changed."""
    await StockRepository(tx).lock_lot(lot_id)


Done = TypeVar("Done")


async def change_lot(
    tx: Tx,
    lot_id: str,
    actor: str,
    action: str,
    change: Callable[[], Awaitable[Done]],
    detail: Callable[[Done], dict[str, Any]],
) -> tuple[Done, queries.LotStock]:
    """Run ``change`` (a use case below, on the lot ``lot_id``) under the lot's lock
    (:func:`lock_lot`); if what it returns is true (it changed something), write it to the
    audit trail as ``action`` with ``detail(...)`` of that and the lot as it was and as it
    is now. Returns what ``change`` returned and the lot as it is now."""
    await lock_lot(tx, lot_id)
    before = await queries.lot_stock(tx.conn, lot_id, days.today())
    done = await change()
    await tx.flush()  # the lot's new counters (held for the commit), read back just below
    after = await queries.lot_stock(tx.conn, lot_id, days.today())
    assert after is not None  # the change raised UnknownLot otherwise
    if done and before is not None:
        was, now = before.model_dump(mode="json"), after.model_dump(mode="json")
        await audit.record(
            tx.conn, actor, action, lot_id, before=was, after=now, detail=detail(done)
        )
    return done, after


async def adjust_lot(
    tx: Tx,
    lot_id: str,
    delta: int,
    reason: str,
    adjustment_id: str,
    actor: str,
    spoiled: bool = False,
) -> bool:
    """Correct a lot's count by ``delta`` units (received and available move together), or
    write off ``-delta`` units ``spoiled`` (from available to spoiled, received unchanged);
    True if applied, False if ``adjustment_id`` was applied before (a retried request).
    Raises ``StockError`` when removing more than is available."""
    repo = StockRepository(tx)
    state = await repo.locked_lot(lot_id)
    if state is None:
        raise UnknownLot(lot_id)
    if not await repo.record_adjustment(adjustment_id, lot_id, delta, reason, actor, spoiled):
        made = await repo.adjustment(adjustment_id)
        if made != (lot_id, delta, reason, spoiled):
            assert made is not None  # recorded, since this one could not be
            raise Conflict(f"adjustment {adjustment_id} {made_with(*made)}")
        return False
    move = adjust_move(lot_id, state.counters, delta, spoiled, state.lot.on_sale)
    await repo.apply([move])
    return True


def made_with(lot_id: str, delta: int, reason: str, spoiled: bool) -> str:
    """What a key's first adjustment was made with, said to a request reusing the key with
    other values (a mistyped retry, or another adjustment under a key taken): which of the
    two to send again is the caller's to tell."""
    kind = "written off spoiled" if spoiled else "adjusted"
    return (
        f"was made with other values: lot {lot_id} {kind} by {delta} for {reason!r}; the same"
        " values again are that adjustment, applied once, and another adjustment takes"
        " another key"
    )


async def set_selling(tx: Tx, lot_id: str, on_sale: bool, reason: str, actor: str) -> bool:
    """Stop a lot selling (``on_sale`` false: orders take none of it, its holds are sold or
    released as before, so they drain) or restart it; True if that changed it. Under the
    lot's lock, as a reservation takes it: an order waiting for it then passes the lot by
    (:data:`~services.inventory.adapters.repository._LOTS` rechecks ``on_sale``), and a hold
    committed before is counted as held. Raises UnknownLot."""
    repo = StockRepository(tx)
    state = await repo.locked_lot(lot_id)
    if state is None:
        raise UnknownLot(lot_id)
    if state.lot.on_sale == on_sale:
        return False
    await repo.set_selling(new_id(), lot_id, on_sale, reason, actor)
    return True


LotTerms = dict[str, tuple[object, object]]
"""A lot's terms changed by a correction: field by name, (before, after)."""


async def correct_lot(
    tx: Tx,
    lot_id: str,
    reason: str,
    actor: str,
    *,
    sku: str | None = None,
    available_from: date | None = None,
    best_before: date | None = None,
) -> LotTerms:
    """Set right a lot's terms mistyped when it was received (those given, None: left as
    they are); returns the terms it changed (none: the lot has them already, nothing is
    recorded). Under the lot's lock, as a reservation takes it: an order being served waits
    for it, then finds the lot by its new terms (another SKU's, out of season: not at all);
    a correction waits for an order, then sees what it holds.
    Raises UnknownLot, UnknownSku, DatesOutOfOrder, or Refused (:func:`correction_refused`)."""
    repo = StockRepository(tx)
    state = await repo.locked_lot(lot_id)
    if state is None:
        raise UnknownLot(lot_id)
    lot = state.lot
    sku = sku or lot.sku
    first, last = available_from or lot.available_from, best_before or lot.best_before
    changed: LotTerms = {
        name: (old, new)
        for name, old, new in (
            ("sku", lot.sku, sku),
            ("available_from", lot.available_from, first),
            ("best_before", lot.best_before, last),
        )
        if old != new
    }
    if not changed:
        return {}
    if last < first:
        raise DatesOutOfOrder(f"best_before {last} is before available_from {first}")
    if sku != lot.sku and not await repo.products([sku]):
        raise UnknownSku(sku)
    if refused := correction_refused(lot_id, state.counters, sku != lot.sku, lot.on_sale):
        raise Refused(refused)
    corrected = replace(lot, sku=sku, available_from=first, best_before=last)
    await repo.correct_lot(new_id(), corrected, changed, reason, actor)
    return changed

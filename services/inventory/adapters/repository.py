"""Reading and changing lots and reservations, inside one transaction.

What the repository loads it keeps in the transaction's identity map (``Tx.identity``):
lots (locked, with their counters), holds (locked) and their lines, products. A batch of
order events is prepared in a few statements (:meth:`StockRepository.prepare`), all its
lots locked at once in ``lot_id`` order; each handler then decides from the map, and moves
change the counters in memory (checked by ``Counters.apply``). The lots' new counters and
the holds' new statuses are written when the transaction commits, once per row.

An order locks only the lots of its SKUs that can serve it: in season on its day, on sale,
with something available. A SKU restocked daily has hundreds of lots after a season, nearly all
empty or expired, and locking a row writes it. Whatever writes a lot locks that lot itself,
by id, empty or not (a release, a sale, an adjustment).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import cast

from sqlalchemy import Date, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.inventory.adapters.tables import (
    lot_adjustments,
    lot_corrections,
    lot_selling,
    lots,
    products,
    reservation_lines,
    reservations,
)
from services.inventory.domain.ledger import Counters, Held, HoldStatus, LotState, Move
from services.inventory.domain.stock import Lot, Season, Take
from shared.db import driver
from shared.messaging.uow import Tx
from shared.seed import LotSeed
from shared.telemetry import current_trace_headers

# Kinds of rows in the transaction's identity map.
PRODUCT, LOT, LOTS_OF, HOLD, HELD = (
    "inventory.product",
    "inventory.lot",
    "inventory.lots_of_sku",
    "inventory.hold",
    "inventory.held",
)


@dataclass(frozen=True)
class Product:
    sku: str
    seller_id: str
    unit_price_fen: int


@dataclass
class _LotsOfSku:
    """The lots of a SKU loaded (locked) in this transaction: all those that could serve an
    order on one of ``days`` when they were loaded, and any other loaded by id."""

    days: set[date] = field(default_factory=set)
    lot_ids: set[str] = field(default_factory=set)


# The statements that load a batch's rows run on the driver (driver.fetch).
_PRODUCTS = select(products.c.sku, products.c.seller_id, products.c.unit_price_fen).where(
    driver.any_of(products.c.sku)
)
_FIRST_DAY, _LAST_DAY, _DAY = (bindparam(n, type_=Date) for n in ("first_day", "last_day", "day"))
# The lots of :skus that can serve an order on a day from :first_day to :last_day (through
# the index on sku and best_before), and the lots :lot_ids whatever they hold.
_LOTS = (
    select(lots)
    .where(
        or_(
            and_(
                driver.any_of(lots.c.sku, "skus"),
                lots.c.best_before >= _FIRST_DAY,
                lots.c.available_from <= _LAST_DAY,
                lots.c.available > 0,
                # Rechecked once a lock waited for is granted: a lot stopped selling meanwhile
                # is left out, so a hold committed after a stop never takes from it.
                lots.c.on_sale,
            ),
            driver.any_of(lots.c.lot_id, "lot_ids"),
        )
    )
    .order_by(lots.c.lot_id)
    .with_for_update()
)
# Whether each of :keys has any lot, and any in season on :day: read, not locked.
_SEASONS = select(
    products.c.sku,
    exists().where(lots.c.sku == products.c.sku).label("has_lots"),
    exists()
    .where(
        lots.c.sku == products.c.sku,
        lots.c.best_before >= _DAY,
        lots.c.available_from <= _DAY,
    )
    .label("in_season"),
).where(driver.any_of(products.c.sku))
_HOLDS = driver.locked_by_key(
    select(reservations.c.order_id, reservations.c.status), reservations.c.order_id
)
_HELD = (
    select(
        reservation_lines.c.order_id,
        reservation_lines.c.lot_id,
        reservation_lines.c.quantity,
        lots.c.best_before,
    )
    .join(lots, lots.c.lot_id == reservation_lines.c.lot_id)
    .where(driver.any_of(reservation_lines.c.order_id))
    .order_by(reservation_lines.c.order_id, reservation_lines.c.lot_id)
)


@dataclass(frozen=True)
class Correction:
    """A correction of a lot's terms: when, by whom, and the terms it changed, each field's
    value before and after it (as text)."""

    at: datetime
    actor: str
    before: dict[str, str]
    after: dict[str, str]


@dataclass(frozen=True)
class StoredLot:
    """A lot as it was first received (its terms, its quantity before any adjustment) and
    its count now, ``received`` moved by the adjustments made since (write-offs of spoiled
    units leave it)."""

    first: LotSeed
    received: int


class StockRepository:
    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.conn = tx.conn

    async def prepare(
        self, placed: Mapping[str, tuple[date, list[str]]], ended: Iterable[str]
    ) -> None:
        """Load what handling a batch needs: the holds of its orders, the lines held by those
        that ``ended`` (confirmed or cancelled), the products of the SKUs ``placed`` orders
        ask for (each order on its day), and the lots of both, locked in one statement."""
        ended = list(ended)
        wanted: dict[str, set[date]] = {}
        for day, skus in placed.values():
            for sku in skus:
                wanted.setdefault(sku, set()).add(day)
        await self.load_holds([*placed, *ended])
        await self.products(wanted)
        await self._load_held(ended)
        held = [h.lot_id for o in ended for h in self.tx.identity[HELD, o]]
        await self._load_lots(wanted, held)

    async def products(self, skus: Iterable[str]) -> dict[str, Product]:
        skus = list(skus)
        todo = self.tx.unknown(PRODUCT, skus)
        if todo:
            rows = await driver.fetch(self.conn, _PRODUCTS, keys=todo)
            found = {r.sku: Product(r.sku, r.seller_id, r.unit_price_fen) for r in rows}
            self.tx.remember(PRODUCT, todo, found)
        found = {sku: self.tx.identity[PRODUCT, sku] for sku in skus}
        return {sku: product for sku, product in found.items() if product is not None}

    async def _load_lots(
        self, wanted: Mapping[str, Iterable[date]] | None = None, lot_ids: Iterable[str] = ()
    ) -> None:
        """Lock and load the lots of ``wanted``'s SKUs that can serve an order on one of its
        days (one range of days for them all), and the lots ``lot_ids``, in ``lot_id`` order
        (no deadlocks between transactions); a lot loaded before keeps its state here."""
        known = self.tx.identity
        missing: dict[str, set[date]] = {}
        for sku, on in (wanted or {}).items():
            of_sku: _LotsOfSku | None = known.get((LOTS_OF, sku))
            todo = set(on) - (of_sku.days if of_sku else set())
            if todo:
                missing[sku] = todo
        by_id = self.tx.unknown(LOT, lot_ids)
        if not missing and not by_id:
            return
        new = {sku for sku in missing if (LOTS_OF, sku) not in known}
        for sku, todo in missing.items():
            known.setdefault((LOTS_OF, sku), _LotsOfSku()).days.update(todo)
        if new:  # lots of theirs loaded by id already count (stock may have come back)
            for (kind, _), state in list(known.items()):
                if kind == LOT and state.lot.sku in new:
                    known[LOTS_OF, state.lot.sku].lot_ids.add(state.lot.lot_id)
        days: set[date] = set().union(*missing.values())
        rows = await driver.fetch(
            self.conn,
            _LOTS,
            skus=sorted(missing),
            first_day=min(days, default=None),
            last_day=max(days, default=None),
            lot_ids=by_id,
        )
        for r in rows:
            if (LOT, r.lot_id) not in known:
                lot = Lot(r.lot_id, r.sku, r.available, r.available_from, r.best_before, r.on_sale)
                counters = Counters(r.received, r.available, r.reserved, r.sold, r.spoiled)
                known[LOT, r.lot_id] = LotState(lot, counters)
            if (LOTS_OF, r.sku) in known:
                known[LOTS_OF, r.sku].lot_ids.add(r.lot_id)

    async def lock_lots(self, skus: Iterable[str], day: date) -> list[Lot]:
        """The lots of these SKUs that can serve an order on ``day`` (and any other of theirs
        this transaction locked), locked, each with what is available now."""
        skus = sorted(set(skus))
        await self._load_lots({sku: [day] for sku in skus})
        known = self.tx.identity
        states: list[LotState] = [
            known[LOT, lot_id] for sku in skus for lot_id in known[LOTS_OF, sku].lot_ids
        ]
        return [
            replace(s.lot, available=s.counters.available)
            for s in sorted(states, key=lambda s: s.lot.lot_id)
        ]

    async def seasons(self, skus: Iterable[str], day: date) -> dict[str, Season]:
        """Whether each of these SKUs has any lot, and any in season on ``day``, counting the
        lots that cannot serve (read, not locked): why an order those locked cannot serve is
        refused."""
        rows = await driver.fetch(self.conn, _SEASONS, keys=sorted(set(skus)), day=day)
        return {r.sku: Season(r.has_lots, r.in_season) for r in rows}

    async def load_holds(self, order_ids: Iterable[str]) -> None:
        """Load and lock the holds of these orders (those that have one)."""
        todo = self.tx.unknown(HOLD, order_ids)
        if not todo:
            return
        rows = await driver.fetch(self.conn, _HOLDS, keys=todo)
        self.tx.remember(HOLD, todo, {r.order_id: r.status for r in rows})

    async def reservation_status(self, order_id: str) -> HoldStatus | None:
        await self.load_holds([order_id])
        return cast(HoldStatus | None, self.tx.identity[HOLD, order_id])

    async def create_reservation(
        self,
        order_id: str,
        status: HoldStatus,
        takes: list[Take],
        held_until: datetime | None = None,
    ) -> bool:
        """Record the order's hold (until ``held_until``) and the lots it took from (the lots'
        counters are moved separately), written at commit; False if this order already has a
        reservation (or a rejection). Should another transaction write one meanwhile (two
        instances during a rebalance), this one fails at commit and is retried, and then
        sees it."""
        if await self.reservation_status(order_id) is not None:
            return False
        self.tx.identity[HOLD, order_id] = status
        # The trace of the order event making it: the report of the hold continues it.
        trace = current_trace_headers() or None
        row: dict[str, object] = {
            "order_id": order_id,
            "status": status,
            "trace_headers": trace,
            "held_until": held_until,
        }
        self.tx.insert_later(reservations, row)
        held = []
        for t in takes:
            self.tx.insert_later(
                reservation_lines,
                {"order_id": order_id, "lot_id": t.lot_id, "quantity": t.quantity},
            )
            state: LotState = self.tx.identity[LOT, t.lot_id]
            held.append(Held(t.lot_id, t.quantity, state.lot.best_before))
        self.tx.identity[HELD, order_id] = sorted(held, key=lambda h: h.lot_id)
        return True

    async def _load_held(self, order_ids: Iterable[str]) -> None:
        todo = self.tx.unknown(HELD, order_ids)
        if not todo:
            return
        rows = await driver.fetch(self.conn, _HELD, keys=todo)
        found: dict[str, list[Held]] = {order_id: [] for order_id in todo}
        for r in rows:
            found[r.order_id].append(Held(r.lot_id, r.quantity, r.best_before))
        self.tx.remember(HELD, todo, found)

    async def held_lines(self, order_id: str) -> list[Held]:
        """The lots an order holds stock in (those lots locked), in lot order."""
        await self._load_held([order_id])
        held: list[Held] = self.tx.identity[HELD, order_id]
        await self._load_lots(lot_ids=[h.lot_id for h in held])
        return held

    async def apply(self, moves: Iterable[Move]) -> None:
        """Add each move's deltas to its lot's counters (the lot is locked and loaded);
        ``Counters.apply`` refuses a move that would break them. Written at commit."""
        for move in moves:
            state: LotState = self.tx.identity[LOT, move.lot_id]
            state.counters = c = state.counters.apply(move)
            self.tx.update_later(
                lots,
                "lot_id",
                {
                    "lot_id": move.lot_id,
                    "received": c.received,
                    "available": c.available,
                    "reserved": c.reserved,
                    "sold": c.sold,
                    "spoiled": c.spoiled,
                },
            )

    async def set_status(self, order_id: str, status: HoldStatus) -> None:
        """Set the hold's status (it was loaded, so locked); written at commit."""
        self.tx.identity[HOLD, order_id] = status
        row = {"order_id": order_id, "status": status, "updated_at": datetime.now(UTC)}
        self.tx.update_later(reservations, "order_id", row)

    async def overdue_holds(
        self, hold: timedelta, limit: int
    ) -> list[tuple[str, dict[str, str] | None]]:
        """Orders still holding stock after ``hold`` (by the database's clock) and not yet
        reported, oldest first, row-locked; rows another instance has locked are skipped.
        Each with the trace context of the event that made its hold (None before 2026-12-04)."""
        rows = await self.conn.execute(
            select(reservations.c.order_id, reservations.c.trace_headers)
            .where(
                reservations.c.status == "reserved",
                reservations.c.expiry_notified_at.is_(None),
                reservations.c.created_at <= func.now() - hold,
            )
            .order_by(reservations.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [(r.order_id, r.trace_headers) for r in rows]

    async def mark_expiry_notified(self, order_ids: list[str]) -> None:
        """Mark these holds reported now; one reported already keeps the time it was."""
        await self.conn.execute(
            update(reservations)
            .where(
                reservations.c.order_id.in_(order_ids),
                reservations.c.expiry_notified_at.is_(None),
            )
            .values(expiry_notified_at=func.now())
        )

    async def lock_lot(self, lot_id: str) -> Counters | None:
        await self._load_lots(lot_ids=[lot_id])
        state: LotState | None = self.tx.identity.get((LOT, lot_id))
        return None if state is None else state.counters

    async def locked_lot(self, lot_id: str) -> LotState | None:
        """The lot, locked (as :meth:`lock_lot`), with its terms and counters."""
        await self._load_lots(lot_ids=[lot_id])
        return cast(LotState | None, self.tx.identity.get((LOT, lot_id)))

    async def correct_lot(
        self,
        correction_id: str,
        lot: Lot,
        changed: Mapping[str, tuple[object, object]],
        reason: str,
        actor: str,
    ) -> None:
        """Give a locked lot the terms of ``lot`` (its SKU and dates), and record the
        correction with the terms it ``changed`` (field by name, (before, after)). The lot
        in this transaction's map takes them too."""
        await self.conn.execute(
            update(lots)
            .where(lots.c.lot_id == lot.lot_id)
            .values(sku=lot.sku, available_from=lot.available_from, best_before=lot.best_before)
        )
        state: LotState = self.tx.identity[LOT, lot.lot_id]
        state.lot = lot
        await self.conn.execute(
            lot_corrections.insert().values(
                correction_id=correction_id,
                lot_id=lot.lot_id,
                actor=actor[:128],
                reason=reason,
                before={name: str(old) for name, (old, _) in changed.items()},
                after={name: str(new) for name, (_, new) in changed.items()},
            )
        )

    async def set_selling(
        self, change_id: str, lot_id: str, on_sale: bool, reason: str, actor: str
    ) -> None:
        """Stop (``on_sale`` false) or restart a locked lot's selling, and record it; the lot
        in this transaction's map takes it too."""
        await self.conn.execute(update(lots).where(lots.c.lot_id == lot_id).values(on_sale=on_sale))
        state: LotState = self.tx.identity[LOT, lot_id]
        state.lot = replace(state.lot, on_sale=on_sale)
        await self.conn.execute(
            lot_selling.insert().values(
                change_id=change_id,
                lot_id=lot_id,
                on_sale=on_sale,
                actor=actor[:128],
                reason=reason,
            )
        )

    async def add_lot(self, lot: LotSeed) -> bool:
        """Receive a new lot; False if ``lot_id`` exists already (it is left as it is)."""
        return bool(await self.add_lots([lot]))

    async def add_lots(self, new: Sequence[LotSeed]) -> set[str]:
        """Receive ``new`` lots in one statement, those whose ids exist already left as they
        are; the ids of the lots received."""
        rows = [
            {
                "lot_id": lot.lot_id,
                "sku": lot.sku,
                "received": lot.quantity,
                "available": lot.quantity,
                "available_from": lot.available_from,
                "best_before": lot.best_before,
            }
            for lot in new
        ]
        return await driver.insert_new(self.conn, lots, "lot_id", rows)

    async def lot_terms(self, lot_ids: Sequence[str]) -> dict[str, StoredLot]:
        """The lots of ``lot_ids`` that exist, by id, each as it was first received (before
        any adjustment) and its count now. The ids go as one array (``= ANY``), as a seed
        file's may be many."""
        adjusted = (  # the count's adjustments: a write-off of spoiled units left it
            select(func.coalesce(func.sum(lot_adjustments.c.delta), 0))
            .where(lot_adjustments.c.lot_id == lots.c.lot_id, ~lot_adjustments.c.spoiled)
            .scalar_subquery()
        )
        found = await self.conn.execute(
            select(lots, (lots.c.received - adjusted).label("first_received")).where(
                driver.any_of(lots.c.lot_id)
            ),
            {"keys": list(lot_ids)},
        )
        return {
            row.lot_id: StoredLot(
                first=LotSeed(
                    lot_id=row.lot_id,
                    sku=row.sku,
                    quantity=row.first_received,
                    available_from=row.available_from,
                    best_before=row.best_before,
                ),
                received=row.received,
            )
            for row in found
        }

    async def corrections(self, lot_ids: Sequence[str]) -> dict[str, list[Correction]]:
        """The corrections of the lots of ``lot_ids`` that have any, by lot, oldest first."""
        found = await self.conn.execute(
            select(lot_corrections)
            .where(driver.any_of(lot_corrections.c.lot_id))
            .order_by(lot_corrections.c.created_at, lot_corrections.c.correction_id),
            {"keys": list(lot_ids)},
        )
        by_lot: dict[str, list[Correction]] = {}
        for row in found:
            made = Correction(row.created_at, row.actor, row.before, row.after)
            by_lot.setdefault(row.lot_id, []).append(made)
        return by_lot

    async def record_adjustment(
        self, adjustment_id: str, lot_id: str, delta: int, reason: str, actor: str, spoiled: bool
    ) -> bool:
        """False if ``adjustment_id`` was recorded before (a retried request)."""
        inserted = (
            await self.conn.execute(
                pg_insert(lot_adjustments)
                .values(
                    adjustment_id=adjustment_id,
                    lot_id=lot_id,
                    delta=delta,
                    reason=reason,
                    actor=actor[:128],
                    spoiled=spoiled,
                )
                .on_conflict_do_nothing()
                .returning(lot_adjustments.c.adjustment_id)
            )
        ).first()
        return inserted is not None

    async def adjustment(self, adjustment_id: str) -> tuple[str, int, str, bool] | None:
        """(lot_id, delta, reason, spoiled) of a recorded adjustment."""
        row = (
            await self.conn.execute(
                select(
                    lot_adjustments.c.lot_id,
                    lot_adjustments.c.delta,
                    lot_adjustments.c.reason,
                    lot_adjustments.c.spoiled,
                ).where(lot_adjustments.c.adjustment_id == adjustment_id)
            )
        ).first()
        return None if row is None else (row.lot_id, row.delta, row.reason, row.spoiled)

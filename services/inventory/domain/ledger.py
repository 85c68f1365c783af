"""How stock moves between a lot's counters, and the life of one order's hold: pure rules.

A lot's counters always obey ``received = available + reserved + sold + spoiled`` with none
negative. Every change is a :class:`Move` that keeps that sum (only an adjustment of the
count changes ``received``, and ``available`` with it; a write-off of spoiled units moves
them from ``available`` to ``spoiled``). The handlers compute their moves with the
functions here and apply them to the database (whose CHECK constraints are the second line
of defence); :class:`StockBook` applies the same moves in memory, for property tests.

An order's hold: ``reserved`` on ``order.placed`` (or ``rejected``), then exactly one of
``sold`` (``order.confirmed``) or ``released`` (``order.cancelled``). A cancellation seen
before any reservation leaves a ``released`` tombstone, so a late ``order.placed`` reserves
nothing. A hold still ``reserved`` after the hold time is reported once (``stock.expired``);
it stays held until orders cancels (or confirms) the order.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

from services.inventory.domain.stock import Lot, Rejected, Reserved, Take, allocate, release_split
from shared.seed import MAX_LOT_QUANTITY

HoldStatus = Literal["reserved", "released", "sold", "rejected"]
CancelAction = Literal["release", "tombstone", "ignore"]


class StockError(ValueError):
    """A change that would make a counter negative (or break conservation)."""


@dataclass(frozen=True)
class Move:
    """Deltas to add to one lot's counters."""

    lot_id: str
    received: int = 0
    available: int = 0
    reserved: int = 0
    sold: int = 0
    spoiled: int = 0

    def deltas(self) -> dict[str, int]:
        """The non-zero deltas by counter name."""
        names = ("received", "available", "reserved", "sold", "spoiled")
        return {n: getattr(self, n) for n in names if getattr(self, n)}


@dataclass(frozen=True)
class Counters:
    received: int
    available: int
    reserved: int = 0
    sold: int = 0
    spoiled: int = 0

    def apply(self, move: Move) -> "Counters":
        after = Counters(
            received=self.received + move.received,
            available=self.available + move.available,
            reserved=self.reserved + move.reserved,
            sold=self.sold + move.sold,
            spoiled=self.spoiled + move.spoiled,
        )
        if min(after.received, after.available, after.reserved, after.sold, after.spoiled) < 0:
            raise StockError(f"lot {move.lot_id}: {move} would go negative")
        if after.received != after.available + after.reserved + after.sold + after.spoiled:
            raise StockError(f"lot {move.lot_id}: {move} breaks conservation")
        return after


@dataclass(frozen=True)
class Held:
    """``quantity`` units an order holds in ``lot_id`` (whose ``best_before`` decides release)."""

    lot_id: str
    quantity: int
    best_before: date


def reserve_moves(takes: Sequence[Take]) -> list[Move]:
    return [Move(t.lot_id, available=-t.quantity, reserved=t.quantity) for t in takes]


def release_moves(held: Sequence[Held], day: date) -> list[Move]:
    """Return exactly what was held to the same lots; an expired lot gets it as spoiled."""
    moves = []
    for h in held:
        back, lost = release_split(h.quantity, h.best_before, day)
        moves.append(Move(h.lot_id, available=back, reserved=-h.quantity, spoiled=lost))
    return moves


def sell_moves(held: Sequence[Held]) -> list[Move]:
    return [Move(h.lot_id, reserved=-h.quantity, sold=h.quantity) for h in held]


def adjust_move(
    lot_id: str, counters: Counters, delta: int, spoiled: bool = False, on_sale: bool = True
) -> Move:
    """A stock count correction: ``delta`` units found (+) or lost (-) from what is available.
    Lost to spoilage (``spoiled``), they are written off as spoiled: ``received`` unchanged.
    Units held by orders are not available: removing them too is refused, saying how many
    are held and how they come back (a lot ``on_sale`` is held again as fast as holds end:
    stop it selling first), where the refusal said only what was available."""
    if delta == 0:
        raise StockError("an adjustment changes something")
    if spoiled and delta > 0:
        raise StockError(f"lot {lot_id}: spoiled units are written off, delta must be negative")
    if counters.available + delta < 0:
        short = f"lot {lot_id}: only {counters.available} available, cannot remove {-delta}"
        if not counters.reserved:
            raise StockError(short)
        then = "remove what is available now, the rest as the holds come back"
        raise StockError(
            f"{short}: {counters.reserved} more held by orders ({see_holds(lot_id)}), each"
            " until its order is paid (then sold) or cancelled (then available again);"
            f" {stop_selling_first(lot_id, on_sale, then)}"
        )
    if spoiled:
        return Move(lot_id, available=delta, spoiled=-delta)
    if counters.received + delta > MAX_LOT_QUANTITY:
        raise StockError(
            f"lot {lot_id}: received {counters.received}, cannot add {delta}:"
            f" a lot holds at most {MAX_LOT_QUANTITY} units"
        )
    return Move(lot_id, received=delta, available=delta)


def see_holds(lot_id: str) -> str:
    """Where the orders holding a lot are listed, for a refusal that counts them."""
    return f"see them: caravan inventory holds {lot_id}, or GET /lots/{lot_id}/holds"


def stop_selling_first(lot_id: str, on_sale: bool, then: str) -> str:
    """What to do about a lot's holds before ``then``: a lot selling is held again as fast as
    holds end, so stop it selling first (how, in commands); one stopped already, say so."""
    if not on_sale:
        return f"it is stopped selling: {then}"
    return (
        f"stop it selling (caravan inventory stop-selling {lot_id}, or PUT"
        f" /lots/{lot_id}/selling) so that no new order holds it, and {then}"
    )


def correction_refused(
    lot_id: str, counters: Counters, sku_changes: bool, on_sale: bool = True
) -> str | None:
    """Why a lot's terms (SKU, dates) cannot be set right now; None if they can.

    Not while orders hold any of it: what they hold goes back to the lot (spoiled if past its
    ``best_before`` by then), under its SKU, so another SKU or date would change a hold taken
    on the terms it was taken on. Nor its SKU once any of it went to orders (sold, or spoiled
    coming back): those were sold as the SKU they were, which the SKU's totals still count.
    A lot selling (``on_sale``) is held again as fast as holds end: the refusal says to stop
    it selling first.
    """
    if counters.reserved:
        then = (
            "correct it once they are sold or released (a hold lasts until the order is paid"
            " or cancelled)"
        )
        return (
            f"lot {lot_id}: {counters.reserved} held by orders ({see_holds(lot_id)});"
            f" {stop_selling_first(lot_id, on_sale, then)}"
        )
    if sku_changes and (counters.sold or counters.spoiled):
        gone = f"lot {lot_id}: {counters.sold} sold and {counters.spoiled} spoiled under its SKU"
        if not counters.available:
            return f"{gone}, none of it left: its SKU stays the one it went to orders under"
        return (
            f"{gone}; write off the {counters.available} left (caravan inventory adjust"
            f" {lot_id} --delta -{counters.available} --reason R) and receive them under"
            " their SKU as a new lot (caravan inventory add-lot)"
        )
    return None


def on_cancel(status: HoldStatus | None) -> CancelAction:
    """What ``order.cancelled`` does to an order's hold."""
    if status is None:
        return "tombstone"
    return "release" if status == "reserved" else "ignore"


def on_confirm(status: HoldStatus | None) -> bool:
    """Whether ``order.confirmed`` sells the order's hold."""
    return status == "reserved"


def hold_overdue(
    status: HoldStatus, held_at: datetime, notified: bool, now: datetime, hold: timedelta
) -> bool:
    """Whether a hold must be reported expired now (at most once)."""
    return status == "reserved" and not notified and now - held_at >= hold


def held_until(held_at: datetime, hold: timedelta, deadline_at: datetime | None) -> datetime:
    """When a hold made at ``held_at`` lapses: the order's deadline (after it, orders cancels
    the order ``expired``, whose cancellation releases the hold), or the hold time, if that is
    sooner (or the order's event said no deadline: one of before 2026-12-05)."""
    own = held_at + hold
    return own if deadline_at is None else min(own, deadline_at)


@dataclass
class LotState:
    lot: Lot
    counters: Counters


@dataclass
class Hold:
    status: HoldStatus
    takes: list[Take]
    held_at: datetime
    notified: bool = False


@dataclass
class StockBook:
    """Lots and holds in memory, changed only through the rules above (the handlers' mirror)."""

    known_skus: set[str]
    lots: dict[str, LotState] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)

    def receive(self, lot: Lot) -> None:
        self.lots[lot.lot_id] = LotState(lot, Counters(lot.available, lot.available))

    def _apply(self, moves: Sequence[Move]) -> None:
        after = dict(self.lots)
        for m in moves:
            state = after[m.lot_id]
            after[m.lot_id] = LotState(state.lot, state.counters.apply(m))
        self.lots = after

    def _held(self, order_id: str) -> list[Held]:
        return [
            Held(t.lot_id, t.quantity, self.lots[t.lot_id].lot.best_before)
            for t in self.holds[order_id].takes
        ]

    def reserve(
        self, order_id: str, lines: Sequence[tuple[str, int]], day: date, now: datetime
    ) -> Reserved | Rejected | None:
        """None when the order already has a hold (or a tombstone): a duplicate changes nothing."""
        if order_id in self.holds:
            return None
        current = [replace(s.lot, available=s.counters.available) for s in self.lots.values()]
        decision = allocate(lines, self.known_skus, current, day)
        if isinstance(decision, Rejected):
            self.holds[order_id] = Hold("rejected", [], now)
            return decision
        self._apply(reserve_moves(decision.takes))
        self.holds[order_id] = Hold("reserved", decision.takes, now)
        return decision

    def cancel(self, order_id: str, day: date, now: datetime) -> CancelAction:
        hold = self.holds.get(order_id)
        action = on_cancel(hold.status if hold else None)
        if action == "tombstone":
            self.holds[order_id] = Hold("released", [], now)
        elif action == "release":
            self._apply(release_moves(self._held(order_id), day))
            self.holds[order_id].status = "released"
        return action

    def confirm(self, order_id: str) -> bool:
        hold = self.holds.get(order_id)
        if not on_confirm(hold.status if hold else None):
            return False
        self._apply(sell_moves(self._held(order_id)))
        self.holds[order_id].status = "sold"
        return True

    def expire_holds(self, now: datetime, hold: timedelta) -> list[str]:
        """The orders to report expired now; each is reported once."""
        due = [
            oid
            for oid, h in self.holds.items()
            if hold_overdue(h.status, h.held_at, h.notified, now, hold)
        ]
        for oid in due:
            self.holds[oid].notified = True
        return due

    def adjust(self, lot_id: str, delta: int, spoiled: bool = False) -> None:
        self._apply([adjust_move(lot_id, self.lots[lot_id].counters, delta, spoiled)])

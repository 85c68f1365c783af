"""The stock ledger (services/inventory/domain/ledger.py): the moves the handlers apply, and a
property test over random sequences of reserve, release, confirm, expire and adjust."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from services.inventory.domain.ledger import (
    Counters,
    Held,
    Move,
    StockBook,
    StockError,
    adjust_move,
    correction_refused,
    held_until,
    hold_overdue,
    on_cancel,
    on_confirm,
    release_moves,
    reserve_moves,
    sell_moves,
)
from services.inventory.domain.stock import Lot, Reserved, Take

DAY = date(2026, 11, 30)
HOLD = timedelta(minutes=20)


def test_reserve_release_and_sell_moves_keep_the_sum() -> None:
    c = Counters(10, 10)
    c = c.apply(reserve_moves([Take("L", "S", 4)])[0])
    assert c == Counters(10, 6, 4)
    held = [Held("L", 4, DAY)]
    assert c.apply(release_moves(held, DAY)[0]) == Counters(10, 10, 0)
    assert c.apply(release_moves(held, DAY + timedelta(days=1))[0]) == Counters(10, 6, 0, 0, 4)
    assert c.apply(sell_moves(held)[0]) == Counters(10, 6, 0, 4)


def test_counters_refuse_to_go_negative_or_break_the_sum() -> None:
    with pytest.raises(StockError):
        Counters(3, 3).apply(Move("L", available=-4, reserved=4))
    with pytest.raises(StockError):
        Counters(3, 3).apply(Move("L", available=-1))


def test_adjustments_move_received_and_available_together() -> None:
    assert Counters(5, 2, 3).apply(adjust_move("L", Counters(5, 2, 3), 4)) == Counters(9, 6, 3)
    assert Counters(5, 2, 3).apply(adjust_move("L", Counters(5, 2, 3), -2)) == Counters(3, 0, 3)
    # The 3 reserved are not there to remove: the refusal says where the orders holding them
    # are listed (a drill's clerk queried the database by hand to find whom to call).
    with pytest.raises(StockError, match=r"3 more held by orders \(see them: caravan inventory"):
        adjust_move("L", Counters(5, 2, 3), -3)
    with pytest.raises(StockError):
        adjust_move("L", Counters(5, 2, 3), 0)


def test_spoiled_units_written_off_move_from_available_to_spoiled() -> None:
    """Counters (received, available, reserved, sold, spoiled): received stays what came in."""
    before = Counters(10, 6, 3, 1, 0)
    assert before.apply(adjust_move("L", before, -4, spoiled=True)) == Counters(10, 2, 3, 1, 4)
    with pytest.raises(StockError, match="only 6 available, cannot remove 7: 3 more held by"):
        adjust_move("L", before, -7, spoiled=True)
    with pytest.raises(
        StockError, match=r"again\); it is stopped selling: remove what is available now"
    ):
        adjust_move("L", before, -7, spoiled=True, on_sale=False)
    with pytest.raises(StockError, match=r"^lot L: only 6 available, cannot remove 7$"):
        adjust_move("L", Counters(7, 6, 0, 1, 0), -7)  # none held: nothing more to say
    with pytest.raises(StockError, match="delta must be negative"):
        adjust_move("L", before, 2, spoiled=True)


def test_an_adjustment_past_what_a_lot_holds_is_refused_as_a_stock_error() -> None:
    """Past PostgreSQL's integer: the API's 409, where the database's refusal was a 422
    naming its query argument ("value out of int32 range")."""
    full = Counters(2**31 - 1, 2**31 - 1)
    with pytest.raises(StockError, match="cannot add 1: a lot holds at most 2147483647 units"):
        adjust_move("L", full, 1)
    almost = Counters(2**31 - 2, 2**31 - 3, 1)
    assert almost.apply(adjust_move("L", almost, 1)) == Counters(2**31 - 1, 2**31 - 2, 1)


def test_a_lot_is_corrected_while_nothing_is_held_its_sku_while_nothing_went_to_orders() -> None:
    """Counters (received, available, reserved, sold, spoiled); the flag: the SKU changes."""
    assert correction_refused("L", Counters(5, 5), sku_changes=True) is None
    assert correction_refused("L", Counters(5, 3, 0, 2), sku_changes=False) is None
    held = correction_refused("L", Counters(5, 3, 2), sku_changes=False)
    assert held is not None and held.startswith("lot L: 2 held by orders")
    # A lot selling is held again as fast as holds end: the refusal says how to stop it.
    assert "stop it selling (caravan inventory stop-selling L, or PUT /lots/L/selling)" in held
    stopped = correction_refused("L", Counters(5, 3, 2), sku_changes=False, on_sale=False)
    assert stopped == (
        "lot L: 2 held by orders (see them: caravan inventory holds L, or GET /lots/L/holds);"
        " it is stopped selling: correct it once they are sold or released (a hold lasts until"
        " the order is paid or cancelled)"
    )
    sold = correction_refused("L", Counters(5, 3, 0, 1, 1), sku_changes=True)
    assert sold == (
        "lot L: 1 sold and 1 spoiled under its SKU; write off the 3 left (caravan inventory"
        " adjust L --delta -3 --reason R) and receive them under their SKU as a new lot"
        " (caravan inventory add-lot)"
    )
    # Sold out, nothing is left to write off or receive again (a drill's lot of 300, all
    # sold, was told "write off what is left").
    gone = correction_refused("L", Counters(300, 0, 0, 300), sku_changes=True)
    assert gone == (
        "lot L: 300 sold and 0 spoiled under its SKU, none of it left: its SKU stays the one it"
        " went to orders under"
    )


@pytest.mark.parametrize(
    ("status", "cancel", "confirm"),
    [
        (None, "tombstone", False),
        ("reserved", "release", True),
        ("released", "ignore", False),
        ("sold", "ignore", False),
        ("rejected", "ignore", False),
    ],
)
def test_hold_transitions(status: str | None, cancel: str, confirm: bool) -> None:
    assert on_cancel(status) == cancel  # type: ignore[arg-type]
    assert on_confirm(status) is confirm  # type: ignore[arg-type]


def test_hold_overdue_once_and_only_while_reserved() -> None:
    t0 = datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert hold_overdue("reserved", t0, False, t0 + HOLD, HOLD)
    assert not hold_overdue("reserved", t0, False, t0 + HOLD - timedelta(seconds=1), HOLD)
    assert not hold_overdue("reserved", t0, True, t0 + 2 * HOLD, HOLD)
    assert not hold_overdue("sold", t0, False, t0 + 2 * HOLD, HOLD)


def test_a_hold_lasts_until_the_orders_deadline_or_its_own_time_whichever_is_sooner() -> None:
    """The saga's deadline (15 minutes by default) comes before the hold's time (20): orders
    cancels the order ``expired`` then, and the cancellation releases the hold. An order
    placed with no deadline said (an event of before 2026-12-05) is held the hold's time."""
    t0 = datetime(2026, 11, 30, 8, tzinfo=UTC)
    deadline_at = t0 + timedelta(minutes=15)
    assert held_until(t0, HOLD, deadline_at) == deadline_at
    assert held_until(t0, HOLD, t0 + HOLD + timedelta(seconds=1)) == t0 + HOLD
    assert held_until(t0, HOLD, None) == t0 + HOLD


# --- property: random sequences against the in-memory book ---------------------------------

SKUS = ["A", "B"]


class StockMachine(RuleBasedStateMachine):
    """Reserve, cancel (release), confirm (sell), expire holds (then orders cancels), adjust
    lots and let time pass, in any order and with duplicates, as Kafka may deliver them."""

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.book = StockBook(known_skus=set(SKUS))
        self.received: dict[str, int] = {}
        self.now = datetime(2026, 11, 30, 8, tzinfo=UTC)
        self.placed = 0

    @property
    def day(self) -> date:
        return self.now.date()

    @initialize(lots=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(0, 30)), min_size=1))
    def harvest(self, lots: list[tuple[str, int]]) -> None:
        for sku, quantity in lots[:5]:
            self.receive(sku, quantity, start=0, length=2)

    @rule(
        sku=st.sampled_from(SKUS),
        quantity=st.integers(0, 30),
        start=st.integers(-3, 1),
        length=st.integers(0, 4),
    )
    def receive(self, sku: str, quantity: int, start: int, length: int) -> None:
        if len(self.book.lots) >= 8:
            return
        lot_id = f"L{len(self.book.lots)}"
        begins = self.day + timedelta(days=start)
        self.book.receive(Lot(lot_id, sku, quantity, begins, begins + timedelta(days=length)))
        self.received[lot_id] = quantity

    @rule(
        target=orders,
        lines=st.dictionaries(st.sampled_from(SKUS), st.integers(1, 12), min_size=1),
        unknown=st.integers(0, 9),
    )
    def place(self, lines: dict[str, int], unknown: int) -> str:
        order = f"o{self.placed}"
        self.placed += 1
        if unknown == 0:  # now and then an unknown SKU rejects the whole order
            lines = {**lines, "NOPE": 1}
        self.reserve(order, lines)
        return order

    @rule(order=orders, lines=st.dictionaries(st.sampled_from(SKUS), st.integers(1, 5), min_size=1))
    def reserve(self, order: str, lines: dict[str, int]) -> None:
        """Also a redelivered (or a second, conflicting) ``order.placed``: no effect."""
        before = {k: s.counters.available for k, s in self.book.lots.items()}
        already = order in self.book.holds
        result = self.book.reserve(order, list(lines.items()), self.day, self.now)
        assert (result is None) == already
        if isinstance(result, Reserved):
            for take in result.takes:
                lot = self.book.lots[take.lot_id].lot
                assert lot.in_season(self.day)  # never from an expired (or future) lot
                assert take.quantity <= before[take.lot_id]
        else:  # rejected or duplicate: nothing moved
            assert before == {k: s.counters.available for k, s in self.book.lots.items()}

    @rule()
    def cancel_unknown_order(self) -> None:
        """A cancellation before the order is seen leaves a tombstone; placing it then holds
        nothing."""
        order = f"x{self.placed}"
        self.placed += 1
        assert self.book.cancel(order, self.day, self.now) == "tombstone"
        self.reserve(order, {SKUS[0]: 1})

    @rule(order=orders)
    def cancel(self, order: str) -> None:
        hold = self.book.holds[order]
        releasing = [] if hold.status != "reserved" else list(hold.takes)
        spoiled = {k: s.counters.spoiled for k, s in self.book.lots.items()}
        self.book.cancel(order, self.day, self.now)
        assert hold.status in ("released", "sold", "rejected")
        for take in releasing:  # what comes back to an expired lot is spoiled, nothing else
            lot = self.book.lots[take.lot_id]
            expected = take.quantity if self.day > lot.lot.best_before else 0
            assert lot.counters.spoiled - spoiled[take.lot_id] == expected

    @rule(order=orders)
    def confirm(self, order: str) -> None:
        status = self.book.holds[order].status if order in self.book.holds else None
        assert self.book.confirm(order) == (status == "reserved")

    @rule()
    def expire(self) -> None:
        due = self.book.expire_holds(self.now, HOLD)
        assert self.book.expire_holds(self.now, HOLD) == []  # reported once
        for order in due:  # orders cancels each still-pending order, ``expired``
            assert self.book.holds[order].status == "reserved"
            self.book.cancel(order, self.day, self.now)

    @rule(minutes=st.sampled_from([1, 30, 60 * 24, 60 * 24 * 3]))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(data=st.data(), delta=st.integers(-20, 20), spoiled=st.booleans())
    def adjust(self, data: st.DataObject, delta: int, spoiled: bool) -> None:
        if not self.book.lots:
            return
        lot_id = data.draw(st.sampled_from(sorted(self.book.lots)))
        available = self.book.lots[lot_id].counters.available
        try:
            self.book.adjust(lot_id, delta, spoiled)
        except StockError:
            assert delta == 0 or available + delta < 0 or (spoiled and delta > 0)
            return
        if not spoiled:  # a write-off of spoiled units leaves what the lot received
            self.received[lot_id] += delta

    @invariant()
    def every_lot_is_conserved_and_never_negative(self) -> None:
        held: dict[tuple[str, str], int] = {}
        for hold in self.book.holds.values():
            for take in hold.takes:
                key = (take.lot_id, hold.status)
                held[key] = held.get(key, 0) + take.quantity
        for lot_id, state in self.book.lots.items():
            c = state.counters
            assert min(c.available, c.reserved, c.sold, c.spoiled) >= 0
            assert c.available + c.reserved + c.sold + c.spoiled == c.received
            assert c.received == self.received[lot_id]
            assert c.reserved == held.get((lot_id, "reserved"), 0)
            assert c.sold == held.get((lot_id, "sold"), 0)


TestStockMachine = StockMachine.TestCase
TestStockMachine.settings = settings(max_examples=120, stateful_step_count=30)

"""Allocation of order lines to harvest lots (services/inventory/domain/stock.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inventory.domain.stock import (
    Lot,
    Rejected,
    RejectReason,
    Reserved,
    Season,
    Take,
    allocate,
    release_split,
)

DAY = date(2026, 11, 30)
PEPPER = "SWN-PEPPER-CAYENNE-1KG"
RAISIN = "TRF-RAISIN-GREEN-500G"
FIG = "ATS-FIG-1KG"
KNOWN = {PEPPER, RAISIN, FIG}


def lot(
    lot_id: str,
    sku: str = PEPPER,
    available: int = 10,
    *,
    available_from: date = DAY - timedelta(days=30),
    best_before: date = DAY + timedelta(days=30),
) -> Lot:
    return Lot(lot_id, sku, available, available_from, best_before)


# --- happy paths ---------------------------------------------------------------------------


def test_a_lot_stopped_selling_is_passed_by_and_alone_it_is_out_of_stock() -> None:
    """Stopped selling, a lot in season serves no order: the SKU's other lots do, and
    with none left the order is ``out_of_stock`` (the lot is in season, its stock not to
    be had), not ``out_of_season``."""
    stopped = replace(lot("A", best_before=DAY + timedelta(days=1)), on_sale=False)
    assert allocate([(PEPPER, 3)], KNOWN, [stopped, lot("B")], DAY) == Reserved(
        [Take("B", PEPPER, 3)]
    )
    assert allocate([(PEPPER, 3)], KNOWN, [stopped], DAY) == Rejected("out_of_stock", [PEPPER])


def test_earliest_best_before_is_served_first() -> None:
    lots = [
        lot("L-LATE", best_before=DAY + timedelta(days=90)),
        lot("L-EARLY", best_before=DAY + timedelta(days=5)),
        lot("L-MID", best_before=DAY + timedelta(days=40)),
    ]
    assert allocate([(PEPPER, 3)], KNOWN, lots, DAY) == Reserved([Take("L-EARLY", PEPPER, 3)])


def test_equal_best_before_is_ordered_by_lot_id() -> None:
    lots = [lot("L-B", available=2), lot("L-A", available=2)]
    assert allocate([(PEPPER, 3)], KNOWN, lots, DAY) == Reserved(
        [Take("L-A", PEPPER, 2), Take("L-B", PEPPER, 1)]
    )


def test_one_line_spans_two_lots_with_exact_takes() -> None:
    lots = [
        lot("L-2", available=50, best_before=DAY + timedelta(days=60)),
        lot("L-1", available=7, best_before=DAY + timedelta(days=10)),
    ]
    assert allocate([(PEPPER, 12)], KNOWN, lots, DAY) == Reserved(
        [Take("L-1", PEPPER, 7), Take("L-2", PEPPER, 5)]
    )


def test_exactly_all_in_season_stock_can_be_taken() -> None:
    lots = [lot("L-1", available=4), lot("L-2", available=6)]
    assert allocate([(PEPPER, 10)], KNOWN, lots, DAY) == Reserved(
        [Take("L-1", PEPPER, 4), Take("L-2", PEPPER, 6)]
    )


def test_lot_that_covers_the_line_stops_the_search() -> None:
    lots = [lot("L-1", available=5), lot("L-2", available=5)]
    assert allocate([(PEPPER, 5)], KNOWN, lots, DAY) == Reserved([Take("L-1", PEPPER, 5)])


def test_several_lines_each_take_from_their_own_sku() -> None:
    lots = [lot("P-1", PEPPER, 10), lot("R-1", RAISIN, 10), lot("F-1", FIG, 10)]
    result = allocate([(RAISIN, 2), (PEPPER, 9)], KNOWN, lots, DAY)
    assert result == Reserved([Take("R-1", RAISIN, 2), Take("P-1", PEPPER, 9)])


def test_lots_with_nothing_available_are_skipped() -> None:
    lots = [
        lot("L-EMPTY", available=0, best_before=DAY + timedelta(days=1)),
        lot("L-FULL", available=8, best_before=DAY + timedelta(days=20)),
    ]
    assert allocate([(PEPPER, 8)], KNOWN, lots, DAY) == Reserved([Take("L-FULL", PEPPER, 8)])


def test_out_of_season_lots_are_never_taken_from() -> None:
    lots = [
        lot("L-OLD", available=100, best_before=DAY - timedelta(days=1)),
        lot("L-NEXT", available=100, available_from=DAY + timedelta(days=1)),
        lot("L-NOW", available=3),
    ]
    assert allocate([(PEPPER, 3)], KNOWN, lots, DAY) == Reserved([Take("L-NOW", PEPPER, 3)])


@pytest.mark.parametrize(
    ("available_from", "best_before"),
    [(DAY, DAY + timedelta(days=10)), (DAY - timedelta(days=10), DAY), (DAY, DAY)],
    ids=["first-day", "last-day", "single-day"],
)
def test_boundary_days_are_in_season(available_from: date, best_before: date) -> None:
    lots = [lot("L-1", available_from=available_from, best_before=best_before)]
    assert allocate([(PEPPER, 1)], KNOWN, lots, DAY) == Reserved([Take("L-1", PEPPER, 1)])


# --- rejections ----------------------------------------------------------------------------


def test_unknown_sku() -> None:
    lots = [lot("L-1", sku="NOPE")]  # lots for it do not make it known
    assert allocate([("NOPE", 1)], KNOWN, lots, DAY) == Rejected("unknown_sku", ["NOPE"])


@pytest.mark.parametrize(
    ("available_from", "best_before"),
    [
        (DAY - timedelta(days=30), DAY - timedelta(days=1)),  # expired yesterday
        (DAY + timedelta(days=1), DAY + timedelta(days=30)),  # starts tomorrow
    ],
    ids=["after-best-before", "before-available-from"],
)
def test_out_of_season(available_from: date, best_before: date) -> None:
    lots = [lot("L-1", available=100, available_from=available_from, best_before=best_before)]
    assert allocate([(PEPPER, 1)], KNOWN, lots, DAY) == Rejected("out_of_season", [PEPPER])


def test_out_of_season_even_when_all_lots_are_also_empty() -> None:
    lots = [lot("L-1", available=0, best_before=DAY - timedelta(days=1))]
    assert allocate([(PEPPER, 1)], KNOWN, lots, DAY) == Rejected("out_of_season", [PEPPER])


def test_too_little_in_season_stock_is_out_of_stock() -> None:
    lots = [
        lot("L-1", available=4),
        lot("L-2", available=5),
        lot("L-OLD", available=1000, best_before=DAY - timedelta(days=1)),
    ]
    assert allocate([(PEPPER, 10)], KNOWN, lots, DAY) == Rejected("out_of_stock", [PEPPER])


def test_in_season_lots_all_empty_is_out_of_stock_not_out_of_season() -> None:
    lots = [lot("L-1", available=0), lot("L-OLD", available=9, best_before=DAY - timedelta(days=1))]
    assert allocate([(PEPPER, 1)], KNOWN, lots, DAY) == Rejected("out_of_stock", [PEPPER])


def test_known_sku_without_any_lot_is_out_of_stock() -> None:
    assert allocate([(FIG, 1)], KNOWN, [lot("L-1", PEPPER)], DAY) == Rejected("out_of_stock", [FIG])


def test_one_failing_line_rejects_the_whole_order_with_no_takes() -> None:
    lots = [lot("P-1", PEPPER, 10), lot("R-1", RAISIN, 1)]
    result = allocate([(PEPPER, 5), (RAISIN, 2)], KNOWN, lots, DAY)
    assert result == Rejected("out_of_stock", [RAISIN])  # PEPPER alone would have fitted


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # PEPPER: out_of_season, RAISIN: out_of_stock, NOPE: unknown_sku
        ([(RAISIN, 5), (PEPPER, 1), ("NOPE", 1)], Rejected("unknown_sku", ["NOPE"])),
        ([(RAISIN, 5), (PEPPER, 1)], Rejected("out_of_season", [PEPPER])),
        ([(PEPPER, 1), (RAISIN, 5)], Rejected("out_of_season", [PEPPER])),
        ([(RAISIN, 5), (FIG, 1)], Rejected("out_of_stock", [FIG, RAISIN])),
        ([("ZZZ", 1), (RAISIN, 5), ("AAA", 1)], Rejected("unknown_sku", ["AAA", "ZZZ"])),
    ],
)
def test_reason_priority_and_sorted_skus(lines: list[tuple[str, int]], expected: Rejected) -> None:
    lots = [
        lot("P-OLD", PEPPER, 100, best_before=DAY - timedelta(days=1)),
        lot("R-1", RAISIN, 1),
    ]
    assert allocate(lines, KNOWN, lots, DAY) == expected


# --- release -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (DAY - timedelta(days=1), (7, 0)),
        (DAY, (7, 0)),  # best_before itself is still good
        (DAY + timedelta(days=1), (0, 7)),
    ],
)
def test_release_split(day: date, expected: tuple[int, int]) -> None:
    assert release_split(7, DAY, day) == expected


# --- property ------------------------------------------------------------------------------

SKUS = ["A", "B", "C"]


def _usable(lots: list[Lot], sku: str) -> list[Lot]:
    """In-season lots of ``sku`` with something available, in serving order."""
    return sorted(
        (x for x in lots if x.sku == sku and x.in_season(DAY) and x.available > 0),
        key=lambda x: (x.best_before, x.lot_id),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Lot], list[tuple[str, int]]]:
    """Random lots around DAY, and lines asking for up to a little more than is in season."""
    ids = draw(st.lists(st.text("abcde", min_size=1, max_size=3), unique=True, max_size=10))
    lots = []
    for lot_id in ids:
        start = DAY + timedelta(days=draw(st.integers(-4, 2)))
        end = start + timedelta(days=draw(st.integers(0, 6)))
        sku = draw(st.sampled_from(SKUS))
        lots.append(Lot(lot_id, sku, draw(st.integers(0, 20)), start, end))
    # The contract allows each sku at most once per order.
    skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, unique=True))
    lines = []
    for sku in skus:
        supply = sum(x.available for x in _usable(lots, sku))
        lines.append((sku, draw(st.integers(1, supply + 2))))
    return lots, lines


@settings(max_examples=300)
@given(scenarios())
def test_allocation_properties(scenario: tuple[list[Lot], list[tuple[str, int]]]) -> None:
    lots, lines = scenario
    result = allocate(lines, set(SKUS), lots, DAY)
    enough = all(sum(x.available for x in _usable(lots, sku)) >= q for sku, q in lines)
    assert isinstance(result, Reserved) == enough
    if not isinstance(result, Reserved):
        return

    by_id = {x.lot_id: x for x in lots}
    per_sku: dict[str, list[Take]] = defaultdict(list)
    for take in result.takes:
        per_sku[take.sku].append(take)
        source = by_id[take.lot_id]
        assert source.sku == take.sku
        assert source.in_season(DAY)
        assert 0 < take.quantity <= source.available

    assert {sku: sum(t.quantity for t in takes) for sku, takes in per_sku.items()} == dict(lines)
    for sku, takes in per_sku.items():
        used = [t.lot_id for t in takes]
        assert used == [x.lot_id for x in _usable(lots, sku)][: len(used)]
        # Greedy: every lot but the last one used is emptied.
        assert all(t.quantity == by_id[t.lot_id].available for t in takes[:-1])


@settings(max_examples=300)
@given(scenarios())
def test_the_lots_that_cannot_serve_may_be_left_out_when_seasons_say_what_they_were(
    scenario: tuple[list[Lot], list[tuple[str, int]]],
) -> None:
    """As the repository locks them: the lots with something available in season on a day
    near DAY (a batch's orders are on a range of days), and of each SKU whether it has any lot
    and any in season on DAY. The decision is the one all the lots give, reason included."""
    lots, lines = scenario
    days = [DAY + timedelta(days=n) for n in (-1, 0, 1)]
    near = [x for x in lots if x.available > 0 and any(x.in_season(d) for d in days)]
    seasons = {
        sku: Season(
            has_lots=any(x.sku == sku for x in lots),
            in_season=any(x.sku == sku and x.in_season(DAY) for x in lots),
        )
        for sku in SKUS
    }
    assert allocate(lines, set(SKUS), near, DAY, seasons) == allocate(lines, set(SKUS), lots, DAY)


@pytest.mark.parametrize(
    ("season", "expected"),
    [
        (Season(has_lots=False, in_season=False), "out_of_stock"),  # no lot ever
        (Season(has_lots=True, in_season=False), "out_of_season"),
        (Season(has_lots=True, in_season=True), "out_of_stock"),  # in season, empty
    ],
)
def test_a_sku_none_of_whose_lots_is_given_is_judged_by_its_season(
    season: Season, expected: RejectReason
) -> None:
    assert allocate([(PEPPER, 1)], KNOWN, [], DAY, {PEPPER: season}) == Rejected(expected, [PEPPER])


def test_two_lines_of_one_sku_are_refused_rather_than_oversold() -> None:
    lot = Lot("L1", "S", 5, date(2026, 1, 1), date(2027, 1, 1))
    with pytest.raises(ValueError):
        allocate([("S", 3), ("S", 3)], {"S"}, [lot], date(2026, 6, 1))

"""Credit checks and microloan instalment schedules (services/payments/domain/credit.py)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain.credit import (
    Instalment,
    add_months,
    available_credit,
    fits,
    flat_interest,
    schedule,
)
from shared.events.envelope import MAX_FEN
from shared.events.orders import MAX_LINES, MAX_QUANTITY, MAX_TERM_MONTHS, ScheduledInstalment
from shared.events.payments import PaymentAuthorized
from shared.seed import MAX_UNIT_PRICE_FEN
from shared.settings import MAX_MONTHLY_INTEREST_BP

# --- credit --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "outstanding", "expected"),
    [(500_000, 0, 500_000), (500_000, 120_000, 380_000), (500_000, 500_000, 0), (100, 900, 0)],
)
def test_available_credit(limit: int, outstanding: int, expected: int) -> None:
    assert available_credit(limit, outstanding) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(380_000, True), (380_001, False), (1, True), (0, False), (-1, False)],
    ids=["exactly-available", "one-fen-more", "one-fen", "zero", "negative"],
)
def test_fits_at_the_boundary(amount: int, expected: bool) -> None:
    assert fits(amount, limit_fen=500_000, outstanding_fen=120_000) is expected


def test_nothing_fits_when_outstanding_exceeds_the_limit() -> None:
    assert fits(1, limit_fen=100_000, outstanding_fen=100_001) is False


# --- add_months ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 15), 1, date(2026, 2, 15)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2026, 12, 31), 14, date(2028, 2, 29)),
        (date(2026, 5, 31), 12, date(2027, 5, 31)),
        (date(2026, 5, 31), 24, date(2028, 5, 31)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(1900, 1, 31), 1, date(1900, 2, 28)),  # divisible by 100: not leap
        (date(2000, 1, 31), 1, date(2000, 2, 29)),  # divisible by 400: leap
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 8, 31), 1, date(2026, 9, 30)),
        (date(2026, 7, 31), 0, date(2026, 7, 31)),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


# --- schedule ------------------------------------------------------------------------------


def test_schedule_example() -> None:
    assert schedule(10_000, 3, date(2026, 11, 30)) == [
        Instalment(1, date(2026, 12, 30), 3334),
        Instalment(2, date(2027, 1, 30), 3333),
        Instalment(3, date(2027, 2, 28), 3333),
    ]


@pytest.mark.parametrize(
    ("start", "dues"),
    [
        (
            date(2026, 12, 31),
            [date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31), date(2027, 4, 30)],
        ),
        (
            date(2027, 12, 31),
            [date(2028, 1, 31), date(2028, 2, 29), date(2028, 3, 31), date(2028, 4, 30)],
        ),
    ],
    ids=["common-year", "leap-year"],
)
def test_due_dates_clamp_to_month_end_without_drifting(start: date, dues: list[date]) -> None:
    # Each due date is counted from the start: after Feb 28 comes Mar 31, not Mar 28.
    assert [i.due for i in schedule(400, 4, start)] == dues


def test_single_instalment_is_the_whole_principal() -> None:
    assert schedule(7_001, 1, date(2026, 1, 31)) == [Instalment(1, date(2026, 2, 28), 7_001)]


@pytest.mark.parametrize("term", [0, -1])
def test_schedule_rejects_a_term_below_one(term: int) -> None:
    with pytest.raises(ValueError, match="term_months"):
        schedule(1000, term, date(2026, 1, 1))


def test_a_loan_of_fewer_fen_than_months_has_one_instalment_a_fen() -> None:
    """``schedule(1, 3)`` was 1, 0 and 0 fen: instalments of nothing, never reminded."""
    start = date(2026, 11, 30)
    assert schedule(1, 3, start) == [Instalment(1, date(2026, 12, 30), 1)]
    assert [i.amount_fen for i in schedule(2, 12, start)] == [1, 1]
    assert [i.amount_fen for i in schedule(3, 3, start)] == [1, 1, 1]
    # Interest on the shorter term: 2 fen at 100 % a month over 2 months, 4 fen.
    plan = schedule(2, 3, start, monthly_rate_bp=10_000)
    assert [(i.amount_fen, i.interest_fen) for i in plan] == [(3, 2), (3, 2)]
    with pytest.raises(ValueError, match="principal_fen"):
        schedule(0, 3, start)


@given(
    principal=st.integers(1, 10**12),
    term=st.integers(1, 60),
    start=st.dates(date(1900, 1, 1), date(2400, 12, 31)),
)
def test_schedule_properties(principal: int, term: int, start: date) -> None:
    instalments = schedule(principal, term, start)
    amounts = [i.amount_fen for i in instalments]
    term = min(term, principal)
    assert min(amounts) >= 1

    assert [i.number for i in instalments] == list(range(1, term + 1))
    assert sum(amounts) == principal
    assert max(amounts) - min(amounts) <= 1
    base, extra = divmod(principal, term)
    assert amounts == [base + 1] * extra + [base] * (term - extra)

    for i in instalments:
        assert i.due == add_months(start, i.number)
        months_after_start = (i.due.year - start.year) * 12 + i.due.month - start.month
        assert months_after_start == i.number
        assert i.due.day == start.day or (i.due.day < start.day and _is_month_end(i.due))


def _is_month_end(day: date) -> bool:
    return (day + timedelta(days=1)).day == 1


# --- interest ------------------------------------------------------------------------------


def test_flat_interest_rule() -> None:
    # 1.5% a month for 3 months on 10 000 fen: 450 fen; floored in the buyer's favour.
    assert flat_interest(10_000, 3, 150) == 450
    assert flat_interest(999, 1, 1) == 0
    assert flat_interest(10_000, 12, 0) == 0
    with pytest.raises(ValueError, match="negative"):
        flat_interest(10_000, 3, -1)


def test_schedule_with_interest_example() -> None:
    plan = schedule(10_000, 3, date(2026, 11, 30), monthly_rate_bp=150)
    assert [(i.amount_fen, i.interest_fen, i.principal_fen) for i in plan] == [
        (3484, 150, 3334),
        (3483, 150, 3333),
        (3483, 150, 3333),
    ]


@given(
    principal=st.integers(1, 10**12),
    term=st.integers(1, 12),
    rate=st.integers(0, 2_000),
)
def test_schedule_with_interest_adds_up(principal: int, term: int, rate: int) -> None:
    plan = schedule(principal, term, date(2026, 1, 31), monthly_rate_bp=rate)
    interest = flat_interest(principal, min(term, principal), rate)
    amounts = [i.amount_fen for i in plan]
    assert sum(amounts) == principal + interest
    assert sum(i.interest_fen for i in plan) == interest
    assert sum(i.principal_fen for i in plan) == principal
    assert all(i.principal_fen >= 0 and i.interest_fen >= 0 for i in plan)
    assert max(amounts) - min(amounts) <= 1
    assert amounts == sorted(amounts, reverse=True)  # the remainder goes first


def test_the_largest_order_at_the_highest_rate_fits_bigint_with_room_for_sums() -> None:
    """The bounds on prices and on the interest rate are what keep every amount of an order
    and its loan within PostgreSQL's bigint (``MAX_FEN``), a hundred times over."""
    total = MAX_LINES * MAX_QUANTITY * MAX_UNIT_PRICE_FEN
    plan = schedule(total, MAX_TERM_MONTHS, date(2026, 9, 1), MAX_MONTHLY_INTEREST_BP)
    interest = sum(i.interest_fen for i in plan)
    assert total + interest <= MAX_FEN // 100
    PaymentAuthorized(  # every Fen of it within MAX_FEN
        order_id="o",
        buyer_id="b",
        method="microloan",
        amount_fen=total,
        interest_fen=interest,
        schedule=[ScheduledInstalment(**vars(i)) for i in plan],
    )

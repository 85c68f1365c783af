"""Repayment allocation and reminder stages (services/payments/domain/repayment.py)."""

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain.credit import schedule
from services.payments.domain.repayment import (
    Applied,
    Due,
    Overpayment,
    allocate,
    overdue,
    remaining,
    stage,
)

START = date(2026, 1, 10)


def dues(principal: int = 9_000, term: int = 3, rate_bp: int = 0) -> list[Due]:
    return [
        Due(i.number, i.due, i.amount_fen, i.interest_fen, 0)
        for i in schedule(principal, term, START, rate_bp)
    ]


def paid(items: list[Due], applied: list[Applied]) -> list[Due]:
    by = {a.number: a.amount_fen for a in applied}
    return [
        Due(d.number, d.due, d.amount_fen, d.interest_fen, d.paid_fen + by.get(d.number, 0))
        for d in items
    ]


def test_partial_repayment_pays_the_first_instalment_interest_first() -> None:
    items = dues(9_000, 3, rate_bp=100)  # interest 270: 90 per instalment
    assert allocate(items, 50) == [Applied(1, 50, 50, 0)]
    assert allocate(items, 1_000) == [Applied(1, 1_000, 90, 910)]


def test_early_repayment_runs_on_into_later_instalments() -> None:
    items = dues(9_000, 3)
    assert allocate(items, 4_500) == [Applied(1, 3_000, 0, 3_000), Applied(2, 1_500, 0, 1_500)]
    after = paid(items, allocate(items, 4_500))
    assert allocate(after, 1_600) == [Applied(2, 1_500, 0, 1_500), Applied(3, 100, 0, 100)]


def test_full_repayment_and_overpayment() -> None:
    items = dues(10_000, 3, rate_bp=150)
    assert remaining(items) == 10_450
    applied = allocate(items, 10_450)
    assert sum(a.principal_fen for a in applied) == 10_000
    assert sum(a.interest_fen for a in applied) == 450
    assert remaining(paid(items, applied)) == 0
    with pytest.raises(Overpayment):
        allocate(items, 10_451)
    with pytest.raises(ValueError):
        allocate(items, 0)


@given(
    principal=st.integers(1, 10**9),
    term=st.integers(1, 12),
    rate=st.integers(0, 500),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
)
def test_repayments_in_any_pieces_settle_exactly(
    principal: int, term: int, rate: int, cuts: list[float]
) -> None:
    items = dues(principal, term, rate)
    total = remaining(items)
    principal_paid = interest_paid = 0
    for cut in cuts:
        left = remaining(items)
        amount = max(1, int(left * cut)) if left else 0
        if amount == 0:
            break
        applied = allocate(items, amount)
        assert sum(a.amount_fen for a in applied) == amount
        assert all(a.interest_fen + a.principal_fen == a.amount_fen for a in applied)
        principal_paid += sum(a.principal_fen for a in applied)
        interest_paid += sum(a.interest_fen for a in applied)
        items = paid(items, applied)
    rest = remaining(items)
    if rest:
        applied = allocate(items, rest)
        principal_paid += sum(a.principal_fen for a in applied)
        interest_paid += sum(a.interest_fen for a in applied)
        items = paid(items, applied)
    assert remaining(items) == 0
    assert principal_paid == principal and principal_paid + interest_paid == total


def test_stages_and_overdue() -> None:
    due = Due(1, date(2026, 3, 10), 100, 0, 0)
    day = timedelta(days=1)
    assert stage(due, due.due - 4 * day, upcoming_days=3) is None
    assert stage(due, due.due - 3 * day, upcoming_days=3) == "upcoming"
    assert stage(due, due.due, upcoming_days=3) == "today"
    assert stage(due, due.due + day, upcoming_days=3) == "overdue"
    assert overdue(due, due.due + day) and not overdue(due, due.due)
    settled = Due(1, date(2026, 3, 10), 100, 0, 100)
    assert stage(settled, due.due + day, upcoming_days=3) is None
    assert not overdue(settled, due.due + day)

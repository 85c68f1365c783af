"""Allocating a repayment to a loan's instalments, and reminder stages: pure rules.

Allocation rule: a repayment pays the instalments in order of their number (the oldest
unpaid first); within an instalment, its interest part is paid before its principal part.
Money beyond what is due so far is an early repayment and goes on to the next instalments
in the same order (the loan is shortened; interest is not rebated). A repayment may not
exceed what remains to be paid on the loan. Only principal repaid restores credit.
"""

from dataclasses import dataclass
from datetime import date
from typing import Literal

Stage = Literal["upcoming", "today", "overdue"]


@dataclass(frozen=True)
class Due:
    """One instalment as it stands: its amount, interest part and what was paid so far."""

    number: int
    due: date
    amount_fen: int
    interest_fen: int
    paid_fen: int

    @property
    def remaining_fen(self) -> int:
        return self.amount_fen - self.paid_fen


@dataclass(frozen=True)
class Applied:
    """The part of a repayment applied to one instalment."""

    number: int
    amount_fen: int
    interest_fen: int
    principal_fen: int


class Overpayment(ValueError):
    """A repayment larger than what remains to be paid on the loan."""


def remaining(instalments: list[Due]) -> int:
    return sum(i.remaining_fen for i in instalments)


def allocate(instalments: list[Due], amount_fen: int) -> list[Applied]:
    """Split ``amount_fen`` over ``instalments`` by the allocation rule."""
    if amount_fen <= 0:
        raise ValueError("a repayment must be at least one fen")
    if amount_fen > remaining(instalments):
        raise Overpayment(f"{amount_fen} fen is more than the {remaining(instalments)} fen left")
    left = amount_fen
    applied: list[Applied] = []
    for inst in sorted(instalments, key=lambda i: i.number):
        if left == 0:
            break
        take = min(left, inst.remaining_fen)
        if take == 0:
            continue
        interest_left = max(0, inst.interest_fen - inst.paid_fen)
        to_interest = min(take, interest_left)
        applied.append(Applied(inst.number, take, to_interest, take - to_interest))
        left -= take
    return applied


def overdue(inst: Due, today: date) -> bool:
    return inst.remaining_fen > 0 and inst.due < today


def stage(inst: Due, today: date, upcoming_days: int) -> Stage | None:
    """The reminder stage of an unpaid instalment today, or None if none applies yet."""
    if inst.remaining_fen <= 0:
        return None
    if inst.due < today:
        return "overdue"
    if inst.due == today:
        return "today"
    if (inst.due - today).days <= upcoming_days:
        return "upcoming"
    return None

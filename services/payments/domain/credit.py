"""Credit and microloans: pure rules over integer fen.

A buyer's available credit is the limit minus the outstanding principal of the buyer's
loans. A microloan is issued only when the order total fits in it. Instalments split the
principal equally; the remainder of the division is spread one fen at a time over the
first instalments, so the amounts always add up exactly.
"""

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Instalment:
    number: int
    due: date
    amount_fen: int


def available_credit(limit_fen: int, outstanding_fen: int) -> int:
    return max(0, limit_fen - outstanding_fen)


def fits(amount_fen: int, limit_fen: int, outstanding_fen: int) -> bool:
    return 0 < amount_fen <= available_credit(limit_fen, outstanding_fen)


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    last = [
        31,
        29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return date(year, month, min(day.day, last))


def schedule(principal_fen: int, term_months: int, start: date) -> list[Instalment]:
    """Monthly instalments, due one month apart from ``start``, summing to the principal."""
    if term_months < 1:
        raise ValueError("term_months must be at least 1")
    base, remainder = divmod(principal_fen, term_months)
    return [
        Instalment(n, add_months(start, n), base + (1 if n <= remainder else 0))
        for n in range(1, term_months + 1)
    ]

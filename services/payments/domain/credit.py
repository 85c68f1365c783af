"""Credit and microloans: pure rules over integer fen.

A buyer's available credit is the limit minus the outstanding principal of the buyer's
loans. A microloan is issued only when the order total fits in it.

Interest rule (flat, configured): ``interest = floor(principal * rate_bp * term / 10_000)``
where ``rate_bp`` is the monthly rate in basis points (setting
``CARAVAN_PAYMENTS_MONTHLY_INTEREST_BP``, default 0: no interest). Flooring rounds in the
buyer's favour. The loan's total (principal + interest) is split into equal monthly
instalments; the remainder of the division is spread one fen at a time over the first
instalments, so the amounts always add up exactly. Each instalment's interest part is the
interest split the same way (remainder first); its principal part is the rest, so the
principal parts add up exactly to the principal as well.

A loan of fewer fen than the months asked is lent over as many months as it has fen (the
interest on that shorter term): split over the months asked, some instalments were of 0 fen,
owed on no day that mattered, never reminded, and closing the loan oddly.
"""

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Instalment:
    number: int
    due: date
    amount_fen: int
    interest_fen: int = 0

    @property
    def principal_fen(self) -> int:
        return self.amount_fen - self.interest_fen


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


def flat_interest(principal_fen: int, term_months: int, monthly_rate_bp: int) -> int:
    """The loan's whole interest under the flat rule (see the module docstring)."""
    if monthly_rate_bp < 0:
        raise ValueError("monthly_rate_bp must not be negative")
    return principal_fen * monthly_rate_bp * term_months // 10_000


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` equal amounts, the remainder one fen each on the first ones."""
    base, remainder = divmod(total, parts)
    return [base + (1 if n < remainder else 0) for n in range(parts)]


def schedule(
    principal_fen: int, term_months: int, start: date, monthly_rate_bp: int = 0
) -> list[Instalment]:
    """Monthly instalments, due one month apart from ``start``, summing to the principal
    plus the flat interest: ``term_months`` of them, or one a fen where the principal is
    fewer fen (none of 0 fen)."""
    if term_months < 1:
        raise ValueError("term_months must be at least 1")
    if principal_fen < 1:
        raise ValueError("principal_fen must be at least 1")
    term_months = min(term_months, principal_fen)
    interest = flat_interest(principal_fen, term_months, monthly_rate_bp)
    amounts = split(principal_fen + interest, term_months)
    interests = split(interest, term_months)
    return [
        Instalment(n, add_months(start, n), amounts[n - 1], interests[n - 1])
        for n in range(1, term_months + 1)
    ]

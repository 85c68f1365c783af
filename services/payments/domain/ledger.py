"""The double-entry ledger's rules: every money movement is a set of entries in fen that
sums to zero (debits positive, credits negative). Pure: builds entries, stores nothing.

Accounts (a name, and for per-party accounts ``name:party``):

- ``loan_receivable``: principal the buyer owes on a loan (its balance per loan is the
  loan's outstanding principal);
- ``interest_receivable`` / ``interest_income``: interest of a loan, owed and earned;
- ``gateway_clearing``: a prepaid charge the gateway holds for us;
- ``platform_clearing:<app>``: what a marketplace platform collected from its buyer for an
  order it placed with us, which it holds for us;
- ``seller_payable:<seller_id>``: what each seller is owed for an order (the disbursement);
- ``repayments_cash``: money the buyers repaid;
- ``buyer_refund_payable``: money owed back to a buyer: repaid on a loan since voided, or
  charged for an order cancelled whose charge the gateway refused to void (until operations
  refund it by hand, out of what the gateway took: :func:`prepaid_refunded`, or out of the
  repayments: :func:`loan_refunded`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

LOAN_RECEIVABLE = "loan_receivable"
INTEREST_RECEIVABLE = "interest_receivable"
INTEREST_INCOME = "interest_income"
GATEWAY_CLEARING = "gateway_clearing"
REPAYMENTS_CASH = "repayments_cash"
BUYER_REFUND_PAYABLE = "buyer_refund_payable"


def seller_payable(seller_id: str) -> str:
    return f"seller_payable:{seller_id}"


def platform_clearing(app: str) -> str:
    return f"platform_clearing:{app}"


@dataclass(frozen=True)
class Entry:
    account: str
    amount_fen: int


class Unbalanced(ValueError):
    """Entries that do not sum to zero."""


def balanced(entries: list[Entry]) -> list[Entry]:
    """``entries`` without zero amounts, after checking that they sum to zero."""
    if sum(e.amount_fen for e in entries) != 0:
        raise Unbalanced(f"entries sum to {sum(e.amount_fen for e in entries)}: {entries}")
    return [e for e in entries if e.amount_fen != 0]


def _payables(payables: Mapping[str, int], sign: int) -> list[Entry]:
    return [Entry(seller_payable(s), sign * a) for s, a in sorted(payables.items())]


def loan_disbursed(payables: Mapping[str, int], interest_fen: int) -> list[Entry]:
    """A loan pays the sellers for the order; the buyer owes its principal and interest."""
    principal = sum(payables.values())
    return balanced(
        [
            Entry(LOAN_RECEIVABLE, principal),
            *_payables(payables, -1),
            Entry(INTEREST_RECEIVABLE, interest_fen),
            Entry(INTEREST_INCOME, -interest_fen),
        ]
    )


def prepaid_charged(payables: Mapping[str, int]) -> list[Entry]:
    """The gateway charged the buyer for the order; the sellers are owed their parts."""
    return balanced([Entry(GATEWAY_CLEARING, sum(payables.values())), *_payables(payables, -1)])


def platform_collected(app: str, payables: Mapping[str, int]) -> list[Entry]:
    """A marketplace platform took the buyer's money for the order; the sellers are owed
    their parts."""
    return balanced(
        [Entry(platform_clearing(app), sum(payables.values())), *_payables(payables, -1)]
    )


def repaid(principal_fen: int, interest_fen: int) -> list[Entry]:
    return balanced(
        [
            Entry(REPAYMENTS_CASH, principal_fen + interest_fen),
            Entry(LOAN_RECEIVABLE, -principal_fen),
            Entry(INTEREST_RECEIVABLE, -interest_fen),
        ]
    )


def reversal(entries: list[Entry]) -> list[Entry]:
    """The entries that undo ``entries`` (a void)."""
    return balanced([Entry(e.account, -e.amount_fen) for e in entries])


def loan_voided(
    disbursed: list[Entry], repaid_principal_fen: int, repaid_interest_fen: int
) -> list[Entry]:
    """Undo a loan's disbursement; whatever the buyer had repaid is owed back to them."""
    refund = repaid_principal_fen + repaid_interest_fen
    return balanced(
        [
            *reversal(disbursed),
            Entry(LOAN_RECEIVABLE, repaid_principal_fen),
            Entry(INTEREST_RECEIVABLE, repaid_interest_fen),
            Entry(BUYER_REFUND_PAYABLE, -refund),
        ]
    )


def prepaid_void_refused(charged: list[Entry], amount_fen: int) -> list[Entry]:
    """The gateway refused for good to void the charge of a cancelled order: it holds the
    buyer's ``amount_fen``, owed back to them, and the sellers are owed nothing. ``charged``:
    the charge's entries if it was posted (undone here), none if its answer never came."""
    return balanced(
        [
            *reversal(charged),
            Entry(GATEWAY_CLEARING, amount_fen),
            Entry(BUYER_REFUND_PAYABLE, -amount_fen),
        ]
    )


def prepaid_refunded(amount_fen: int) -> list[Entry]:
    """Operations refunded by hand a charge the gateway refused to void: the ``amount_fen``
    owed back to the buyer is paid, out of what the gateway took for the order, which no
    longer holds anything of it."""
    return balanced([Entry(BUYER_REFUND_PAYABLE, amount_fen), Entry(GATEWAY_CLEARING, -amount_fen)])


def loan_refunded(amount_fen: int) -> list[Entry]:
    """Operations refunded by hand what the buyer had repaid on a loan since voided: the
    ``amount_fen`` owed back to them is paid, out of the repayments' cash."""
    return balanced([Entry(BUYER_REFUND_PAYABLE, amount_fen), Entry(REPAYMENTS_CASH, -amount_fen)])

"""Ledger entries of every money movement sum to zero (services/payments/domain/ledger.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain import ledger
from services.payments.domain.ledger import Entry


def balance(entries: list[Entry], account: str) -> int:
    return sum(e.amount_fen for e in entries if e.account == account)


def test_loan_disbursement_pays_each_seller() -> None:
    entries = ledger.loan_disbursed({"s-1": 7_000, "s-2": 2_800}, interest_fen=300)
    assert sum(e.amount_fen for e in entries) == 0
    assert balance(entries, ledger.LOAN_RECEIVABLE) == 9_800
    assert balance(entries, "seller_payable:s-1") == -7_000
    assert balance(entries, "seller_payable:s-2") == -2_800
    assert balance(entries, ledger.INTEREST_INCOME) == -300


def test_unbalanced_entries_are_refused() -> None:
    with pytest.raises(ledger.Unbalanced):
        ledger.balanced([Entry("a", 1), Entry("b", -2)])


@given(
    owed=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 10**9), min_size=1),
    interest=st.integers(0, 10**6),
    repaid_share=st.floats(0, 1),
)
def test_a_voided_loan_leaves_nothing_receivable(
    owed: dict[str, int], interest: int, repaid_share: float
) -> None:
    principal = sum(owed.values())
    disbursed = ledger.loan_disbursed(owed, interest)
    p = int(principal * repaid_share)
    i = int(interest * repaid_share)
    repaid = ledger.repaid(p, i)
    voided = ledger.loan_voided(disbursed, p, i)
    everything = disbursed + repaid + voided
    assert sum(e.amount_fen for e in everything) == 0
    for account in (ledger.LOAN_RECEIVABLE, ledger.INTEREST_RECEIVABLE, ledger.INTEREST_INCOME):
        assert balance(everything, account) == 0
    assert all(balance(everything, ledger.seller_payable(s)) == 0 for s in owed)
    assert balance(everything, ledger.BUYER_REFUND_PAYABLE) == -(p + i)


def test_a_voided_charge_is_reversed() -> None:
    charged = ledger.prepaid_charged({"s-1": 500})
    assert sum(e.amount_fen for e in charged + ledger.reversal(charged)) == 0
    assert balance(charged, ledger.GATEWAY_CLEARING) == 500


@pytest.mark.parametrize("posted", [True, False], ids=["charge posted", "its answer never came"])
def test_a_charge_the_gateway_refused_to_void_is_owed_back_to_the_buyer(posted: bool) -> None:
    """The gateway holds the buyer's money, owed back to them; the sellers are owed nothing."""
    charged = ledger.prepaid_charged({"s-1": 300, "s-2": 200}) if posted else []
    after = charged + ledger.prepaid_void_refused(charged, 500)
    assert balance(after, ledger.GATEWAY_CLEARING) == 500
    assert balance(after, ledger.BUYER_REFUND_PAYABLE) == -500
    assert balance(after, ledger.seller_payable("s-1")) == 0 == balance(after, "seller_payable:s-2")


@pytest.mark.parametrize("posted", [True, False], ids=["charge posted", "its answer never came"])
def test_a_refund_made_by_hand_leaves_nothing_owed_nor_held(posted: bool) -> None:
    """Operations refunded the buyer: nothing owed back, the gateway holds nothing of it."""
    charged = ledger.prepaid_charged({"s-1": 300, "s-2": 200}) if posted else []
    refused = ledger.prepaid_void_refused(charged, 500)
    refunded = ledger.prepaid_refunded(500)
    assert sum(e.amount_fen for e in refunded) == 0
    after = charged + refused + refunded
    assert {e.account for e in refunded} == {ledger.BUYER_REFUND_PAYABLE, ledger.GATEWAY_CLEARING}
    assert all(balance(after, e.account) == 0 for e in after)


def test_a_voided_loan_s_repayments_refunded_by_hand_leave_nothing_owed() -> None:
    """Operations paid back what the buyer repaid on a loan since voided: nothing is owed
    back, and the repayments' cash no longer holds it."""
    disbursed = ledger.loan_disbursed({"s-1": 1000}, 100)
    repaid = ledger.repaid(400, 50)
    voided = ledger.loan_voided(disbursed, 400, 50)
    refunded = ledger.loan_refunded(450)
    assert sum(e.amount_fen for e in refunded) == 0
    after = disbursed + repaid + voided + refunded
    assert all(balance(after, e.account) == 0 for e in after)

"""The history checker on hand-made histories: a correct one passes, and each kind of broken
history is caught by its check, with evidence."""

import ast
import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from caravan.checkout import REPO_ROOT
from caravan.ops.books import Checked
from caravan.reliability.history import (
    CHECKS,
    DATABASE_CHECKS,
    DatabaseState,
    History,
    Injected,
    LedgerEntry,
    Loan,
    Lot,
    Payable,
    Sms,
    Violation,
    check,
    check_database,
)
from shared.events.envelope import EventData, new_event
from shared.events.inventory import LotTake, ReservedLine, StockReserved
from shared.events.notifications import SmsFailed, SmsFailReason, SmsSent
from shared.events.orders import (
    Buyer,
    ConfirmedPayment,
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRequested,
    PaymentRequest,
)
from shared.events.payments import PaymentAuthorized, PaymentRefunded, PaymentVoided
from shared.topics import Topic
from tests.unit.test_docs_links import anchors

SOURCE = "storefront/checker"
PHONE = "+8613900000101"
SELLER_PHONE = "+8613000000101"
OTHER_PHONE = "+8613900000999"


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Log:
    records: list[Record] = field(default_factory=list)

    def add(self, data: EventData, source: str = "caravan/test") -> str:
        event = new_event(data, source=source)
        self.raw(data.topic.value, event.to_json())
        return event.id

    def raw(self, topic: str, value: bytes | None, headers: dict[str, str] | None = None) -> Record:
        partition = 0
        offset = sum(1 for r in self.records if (r.topic, r.partition) == (topic, partition))
        record = Record(
            topic,
            partition,
            offset,
            value,
            tuple((k, v.encode()) for k, v in (headers or {}).items()),
        )
        self.records.append(record)
        return record


def _disbursed(order_id: str, loan_id: str, txn_id: str | None = None) -> list[LedgerEntry]:
    """A loan of 2000 fen paying the seller for the order, as payments posts it."""
    txn_id = txn_id or f"disburse:{loan_id}"
    return [
        LedgerEntry(txn_id, "loan_disbursed", "loan_receivable", 2000, order_id, loan_id),
        LedgerEntry(txn_id, "loan_disbursed", "seller_payable:seller", -2000, order_id, loan_id),
    ]


def _order(log: Log, db: DatabaseState, n: int, confirmed: bool) -> str:
    order_id, ref = f"order-{n}", f"REF-{n}"
    lines = [OrderLine(sku="SKU", quantity=2)]
    log.add(
        OrderRequested(
            order_ref=ref,
            buyer=Buyer(id="buyer", phone=PHONE),
            lines=lines,
            payment=PaymentRequest(method="microloan", term_months=3),
        ),
        source=SOURCE,
    )
    log.add(
        OrderPlaced(
            order_id=order_id,
            order_ref=ref,
            source=SOURCE,
            buyer_id="buyer",
            lines=lines,
            buyer=Buyer(id="buyer", phone=PHONE, locale="en"),
        )
    )
    if confirmed:
        _reserved(log, order_id, ["seller"])
        log.add(
            PaymentAuthorized(
                order_id=order_id, buyer_id="buyer", method="microloan", amount_fen=2000
            )
        )
        log.add(
            OrderConfirmed(
                order_id=order_id,
                order_ref=ref,
                total_fen=2000,
                payment=ConfirmedPayment(method="microloan", loan_id=f"loan-{n}"),
            )
        )
        db.loans.append(Loan(f"loan-{n}", order_id, "buyer", 2000, "active"))
        db.ledger.extend(_disbursed(order_id, f"loan-{n}"))
        db.payables.append(Payable(order_id, "seller", 2000, "owed"))
        db.paid_fen[order_id] = 2000
    else:
        log.add(OrderCancelled(order_id=order_id, order_ref=ref, reason="out_of_stock"))
    db.orders[order_id] = "confirmed" if confirmed else "cancelled"
    db.holds[order_id] = "sold" if confirmed else "rejected"
    db.payments[order_id] = "authorized" if confirmed else "cancelled"
    purpose = "order_confirmed" if confirmed else "order_cancelled"
    _text(log, db, f"sms-{n}", order_id, PHONE, purpose)
    if confirmed:  # and its seller is told
        _text(log, db, f"sms-{n}-seller", order_id, SELLER_PHONE, "new_order")
    return order_id


def _reserved(log: Log, order_id: str, sellers: list[str]) -> None:
    """stock.reserved of ``order_id``: a line from each of ``sellers``."""
    log.add(
        StockReserved(
            order_id=order_id,
            buyer_id="buyer",
            payment=PaymentRequest(method="microloan", term_months=3),
            lines=[
                ReservedLine(
                    sku="SKU",
                    quantity=1,
                    unit_price_fen=1000,
                    seller_id=seller,
                    lots=[LotTake(lot_id="LOT-1", quantity=1)],
                )
                for seller in sellers
            ],
            total_fen=1000 * len(sellers),
        )
    )


def _text(
    log: Log,
    db: DatabaseState,
    sms_id: str,
    order_id: str,
    to: str,
    purpose: str,
    status: str = "delivered",
    *,
    key: str | None = None,
    sent: bool | None = None,
    failed: SmsFailReason | None = None,
) -> None:
    """A text as notifications.sms holds it, with its sms.sent if the gateway took it
    (``sent``; by default when its status says so) and its sms.failed if ``failed``."""
    key = key or f"event-{sms_id}|{to}|{purpose}"
    db.sms.append(Sms(sms_id, order_id, to, purpose, status, key))
    if sent if sent is not None else status in ("sent", "delivered"):
        log.add(
            SmsSent(
                sms_id=sms_id,
                to=to,
                locale="en",
                text="hi",
                encoding="GSM-7",
                segments=1,
                order_id=order_id,
                purpose=purpose,
            )
        )
    if failed is not None:
        log.add(SmsFailed(sms_id=sms_id, to=to, reason=failed, order_id=order_id, purpose=purpose))


def correct() -> tuple[Log, History]:
    log = Log()
    db = DatabaseState(
        lots=[Lot("LOT-1", "SKU", 10, 6, 0, 4, 0)],
        credit_limits={"buyer": 5000},
        seller_phones={"seller": SELLER_PHONE},
    )
    _order(log, db, 1, confirmed=True)
    _order(log, db, 2, confirmed=True)
    _order(log, db, 3, confirmed=False)
    poison = log.raw(Topic.ORDER_REQUESTS.value, b"\xff not json")
    log.raw(
        Topic.ORDER_REQUESTS.dlq,
        poison.value,
        {
            "dlq.topic": poison.topic,
            "dlq.partition": "0",
            "dlq.offset": str(poison.offset),
            "dlq.group": "caravan-orders",
            "dlq.error": "not_json",
        },
    )
    history = History(
        records=log.records,
        db=db,
        injected=[Injected(poison.topic, poison.partition, poison.offset)],
        consumers={Topic.ORDER_REQUESTS.value: ["caravan-orders"]},
        source=SOURCE,
    )
    return log, history


def test_a_correct_history_has_no_violation() -> None:
    assert check(correct()[1]) == []


def test_a_cancelled_order_whose_refused_void_was_refunded_holds_no_charge() -> None:
    """``refunded``: operations paid the buyer back by hand what the gateway would not void,
    said (``payment.refunded``) after the void that said it was owed: not a second end."""
    log, history = correct()
    _refunded(log, "order-3")
    refunded = _db(lambda db: db.payments.update({"order-3": "refunded"}))(log, history)
    _text(log, refunded.db, "sms-3-refund", "order-3", PHONE, "refund_paid")
    assert check(_rebuild(log, refunded)) == []


def _void_after_sale(
    marked: bool = True, owed: int | None = None
) -> Callable[[Log, History], History]:
    """order-1 (confirmed, its loan of 2000 fen) voided by an operator after the sale, as
    ``caravan payments void-sold`` leaves it: the loan voided and reversed in the ledger, the
    sellers owed nothing, the payment voided, ``payment.voided`` said; the order still
    confirmed, its stock sold. ``marked``: the payment says an operator voided it so;
    ``owed``: what ``payment.voided`` said was owed back to the buyer."""

    def voided(log: Log, h: History) -> History:
        db = copy.deepcopy(h.db)
        db.loans[0] = replace(db.loans[0], outstanding_fen=0, status="voided")
        db.ledger.extend(
            LedgerEntry("void:loan-1", "loan_voided", account, fen, "order-1", "loan-1")
            for account, fen in (("loan_receivable", -2000), ("seller_payable:seller", 2000))
        )
        db.payables[0] = replace(db.payables[0], status="cancelled")
        db.payments["order-1"] = "voided"
        if marked:
            db.voided_after_sale.add("order-1")
        log.add(
            PaymentVoided(
                order_id="order-1", loan_id="loan-1", amount_fen=2000, refund_owed_fen=owed
            )
        )
        return _rebuild(log, replace(h, db=db))

    return voided


def test_a_confirmed_order_whose_payment_an_operator_voided_after_the_sale_passes() -> None:
    """A confirmed order whose buyer was refunded after the sale: its payment voided by an
    operator (``caravan payments void-sold``), the order confirmed still; and what its buyer
    had repaid then refunded by hand, and texted; not so marked, its refund was not owed."""
    log, history = correct()
    assert check(_void_after_sale()(copy.deepcopy(log), history)) == []
    voided = _void_after_sale(owed=2000)(log, history)
    assert check(voided) == []
    _refunded(log, "order-1", owed=None)
    refunded = _db(lambda db: db.payments.update({"order-1": "refunded"}))(log, voided)
    _text(log, refunded.db, "sms-1-refund", "order-1", PHONE, "refund_paid")
    assert check(_rebuild(log, refunded)) == []
    unmarked = _db(lambda db: db.voided_after_sale.clear())(log, _rebuild(log, refunded))
    assert {v.check for v in check(unmarked)} == {"confirmed_has_payment", "refund_was_owed"}


def _refunded(log: Log, order_id: str, owed: int | None = 2000, times: int = 1) -> None:
    """``order_id``'s payment voided, ``owed`` back to its buyer (none: nothing said owed),
    and then refunded by hand, said ``times`` times (as so many refunds)."""
    if owed is not None:
        log.add(PaymentVoided(order_id=order_id, amount_fen=2000, refund_owed_fen=owed))
    for n in range(times):
        made = f"BANK-{n}"
        log.add(
            PaymentRefunded(
                order_id=order_id, amount_fen=2000, reference=made, reason="bank", recorded_by="op"
            )
        )


def _refund(order_id: str, **given: Any) -> Callable[[Log, History], History]:
    def broken(log: Log, h: History) -> History:
        _refunded(log, order_id, **given)
        return _rebuild(log, h)

    return broken


def _rebuild(log: Log, history: History) -> History:
    return replace(history, records=list(log.records))


def _lose_terminal(log: Log, h: History) -> History:
    log.records = [r for r in log.records if b"order.cancelled" not in (r.value or b"")]
    return _rebuild(log, h)


def _second_terminal(log: Log, h: History) -> History:
    log.add(OrderCancelled(order_id="order-1", order_ref="REF-1", reason="expired"))
    return _rebuild(log, h)


def _event_after_terminal(log: Log, h: History) -> History:
    log.add(
        OrderPlaced(
            order_id="order-3",
            order_ref="REF-3",
            source=SOURCE,
            buyer_id="buyer",
            lines=[OrderLine(sku="SKU", quantity=1)],
        )
    )
    return _rebuild(log, h)


def _lost_request(log: Log, h: History) -> History:
    log.add(
        OrderRequested(
            order_ref="REF-LOST",
            buyer=Buyer(id="buyer", phone=PHONE),
            lines=[OrderLine(sku="SKU", quantity=1)],
            payment=PaymentRequest(method="prepaid"),
        ),
        source=SOURCE,
    )
    return _rebuild(log, h)


def _db(change: Callable[[DatabaseState], None]) -> Callable[[Log, History], History]:
    def broken(log: Log, h: History) -> History:
        db = copy.deepcopy(h.db)
        change(db)
        return replace(h, db=db)

    return broken


def _forged(
    db: DatabaseState, order_id: str, status: str, loan: str | None = None, owed: str = "owed"
) -> None:
    """Payments acted on a forged ``stock.reserved`` of ``order_id``, an order the orders
    service never had: its payment ``status``, a loan of ``loan``'s status (voided: its
    disbursement reversed), the seller's payable ``owed``, in balance otherwise (what the
    money checks of before passed)."""
    db.payments[order_id] = status
    db.paid_fen[order_id] = 2000
    db.payables.append(Payable(order_id, "seller", 2000, owed))
    if loan is not None:
        loan_id = f"loan-{order_id}"
        voided = loan == "voided"  # and reversed in the ledger, as payments voids a loan
        db.loans.append(Loan(loan_id, order_id, "someone", 0 if voided else 2000, loan))
        db.credit_limits["someone"] = 2000
        db.ledger.extend(_disbursed(order_id, loan_id))
        if voided:
            db.ledger.extend(
                replace(e, txn_id=f"void:{order_id}", kind="loan_voided", amount_fen=-e.amount_fen)
                for e in _disbursed(order_id, loan_id)
            )
    elif status == "authorized":
        txn = f"charge:{order_id}"
        db.ledger.append(
            LedgerEntry(txn, "platform_collected", "platform_clearing:m", 2000, order_id, None)
        )
        db.ledger.append(
            LedgerEntry(txn, "platform_collected", "seller_payable:seller", -2000, order_id, None)
        )


def test_money_for_an_order_that_does_not_exist_is_named_with_all_it_holds() -> None:
    log, history = correct()
    forged = _db(lambda db: _forged(db, "forged-1", "authorized", loan="active"))(log, history)
    assert [str(v) for v in check(forged)] == [
        "[money_without_an_order] forged-1: the orders service never had this order (forged"
        " stock.reserved?), yet: loan loan-forged-1 active, 2000 fen outstanding; payment"
        " 'authorized' of 2000 fen; sellers owed {'seller': 2000} (fen)"
    ]
    # Voided, it holds nothing: a forgery undone, or an order cancelled before it was placed.
    undone = _db(lambda db: _forged(db, "forged-1", "voided", loan="voided", owed="cancelled"))
    assert check(undone(log, history)) == []
    # An order a test placed as the orders service would (its events only) is its own.
    assert check(replace(forged, placed_elsewhere={"forged-1"})) == []


def _taken_back(order_id: str | None, fen: int, seller: str = "seller") -> list[LedgerEntry]:
    """A balanced transaction by hand debiting ``seller``'s account ``fen`` (credit: a
    negative ``fen``) for ``order_id``, out of what the gateway holds; its payable untouched."""
    txn = f"by-hand:{order_id}:{fen}"
    return [
        LedgerEntry(txn, "by_hand", f"seller_payable:{seller}", fen, order_id, None),
        LedgerEntry(txn, "by_hand", "gateway_clearing", -fen, order_id, None),
    ]


def test_a_seller_whose_payables_differ_from_its_account_is_named_with_both_figures() -> None:
    """A seller debited back 500 fen of order-1 in the ledger, its payable owed still: the
    seller named, with the ledger's figures and payables', and the order; no other check
    fails (the transaction balances, no money taken in twice)."""
    _, history = correct()
    assert check_database(history.db) == []
    history.db.ledger.extend(_taken_back("order-1", 500))
    assert check_database(history.db) == [
        Violation(
            "payables_agree_with_the_ledger",
            "seller",
            "the ledger owes it 3500 fen, payables 4000 fen; debited back 500 fen, payables"
            " cancelled 0 fen; 1 order(s) differ: order-1 (ledger 1500 owed, 500 back;"
            " payables 2000 owed, 0 cancelled)",
        )
    ]


def test_differences_that_offset_in_a_seller_s_total_are_named_order_by_order() -> None:
    """order-1 debited back 500 fen in the ledger and the seller credited 500 fen of no order
    (payables reads no such credit): the ledger's total and payables' agree (4000 fen owed),
    their weeks and orders do not."""
    _, history = correct()
    history.db.ledger.extend([*_taken_back("order-1", 500), *_taken_back(None, -500)])
    [found] = check_database(history.db)
    assert found.subject == "seller"
    assert found.evidence.startswith("the ledger owes it 4000 fen, payables 4000 fen;"), found
    assert (
        "2 order(s) differ: no order (ledger 500 owed, 0 back; payables 0 owed, 0 cancelled);"
        " order-1 (ledger 1500 owed, 500 back; payables 2000 owed, 0 cancelled)"
    ) in found.evidence, found


def test_a_payable_owed_that_the_ledger_never_credited_names_its_seller() -> None:
    """order-1's 2000 fen split between two sellers in payables (1500 and 500, both owed:
    the sellers owed the payment in full), the ledger's credit all the first's: the second,
    on neither payables' list (read through the ledger's credits) nor the ledger's, is named
    as the first is."""
    _, history = correct()
    payables = history.db.payables
    payables[0] = replace(payables[0], amount_fen=1500)
    payables.append(Payable("order-1", "seller-b", 500, "owed"))
    found = {v.subject: v.evidence for v in check_database(history.db)}
    assert found["seller-b"] == (
        "the ledger owes it 0 fen, payables 500 fen; debited back 0 fen, payables cancelled 0"
        " fen; 1 order(s) differ: order-1 (ledger 0 owed, 0 back; payables 500 owed, 0"
        " cancelled; never credited)"
    ), found
    assert set(found) == {"seller", "seller-b"}, found


def test_a_payable_credited_twice_is_named() -> None:
    """The seller credited order-1's 2000 fen again by hand (no money taken in: no
    ``money_taken_once``), payables listing it twice as the ledger owes it twice: the
    payable's one 2000 fen are not the ledger's 4000."""
    _, history = correct()
    history.db.ledger.extend(_taken_back("order-1", -2000))
    assert check_database(history.db) == [
        Violation(
            "payables_agree_with_the_ledger",
            "seller",
            "the ledger owes it 6000 fen, payables 4000 fen; debited back 0 fen, payables"
            " cancelled 0 fen; 1 order(s) differ: order-1 (ledger 4000 owed, 0 back;"
            " payables 2000 owed, 0 cancelled; 2 credits)",
        )
    ]


def test_a_sale_refunded_after_it_agrees_and_a_payable_never_owed_is_nothing() -> None:
    """Payables and the ledger agree where the services leave them: a loan voided after the
    sale (credited, debited back, its payable cancelled), a prepaid charge not made (its
    payable cancelled, nothing posted) or in flight (pending), an order of 0 fen (owed 0,
    nothing posted)."""
    log, history = correct()
    voided = _void_after_sale()(log, history)
    voided.db.payables.extend(
        [
            Payable("order-3", "seller", 2000, "cancelled"),
            Payable("order-9", "seller", 2000, "pending"),
            Payable("order-0", "seller", 0, "owed"),
        ]
    )
    assert [
        v for v in check_database(voided.db) if v.check == "payables_agree_with_the_ledger"
    ] == []


def _double_charge(log: Log, h: History) -> History:
    log.add(
        PaymentAuthorized(order_id="order-1", buyer_id="buyer", method="prepaid", amount_fen=2000)
    )
    return _rebuild(log, h)


def _texts(*texts: tuple[str, str, str, str, dict[str, Any]]) -> Callable[[Log, History], History]:
    """More texts: (sms_id, order_id, to, purpose, the rest of _text's arguments)."""

    def broken(log: Log, h: History) -> History:
        db = copy.deepcopy(h.db)
        for sms_id, order_id, to, purpose, rest in texts:
            _text(log, db, sms_id, order_id, to, purpose, **rest)
        return replace(h, records=list(log.records), db=db)

    return broken


def _about(record: Record, sms_id: str) -> bool:
    return record.topic == Topic.NOTIFICATION_EVENTS.value and (
        f'"sms_id":"{sms_id}"'.encode() in (record.value or b"")
    )


def _retext(sms_id: str, **changes: Any) -> Callable[[Log, History], History]:
    """The text ``sms_id`` (its row and its events) as it would be with ``changes`` to
    _text's arguments (``dropped=True``: no such text)."""

    def broken(log: Log, h: History) -> History:
        db = copy.deepcopy(h.db)
        [old] = [s for s in db.sms if s.sms_id == sms_id]
        db.sms.remove(old)
        log.records = [r for r in log.records if not _about(r, sms_id)]
        if not changes.pop("dropped", False):
            again = {"to": old.to, "purpose": old.purpose, "status": old.status} | changes
            _text(log, db, sms_id, str(old.order_id), **again)
        return replace(h, records=list(log.records), db=db)

    return broken


def _sent_again(log: Log, h: History) -> History:
    """sms-1 sent a second time: another sms.sent (an event of its own) for the same text."""
    sent = {"locale": "en", "text": "hi", "encoding": "GSM-7", "segments": 1}
    log.add(SmsSent(sms_id="sms-1", to=PHONE, order_id="order-1", **sent))
    return _rebuild(log, h)


def _reminder(
    sms_id: str, number: int, stage: str = "upcoming", due: str = "", **rest: Any
) -> tuple[str, str, str, str, dict[str, Any]]:
    """A reminder of instalment ``number`` of order-1's loan (due ``due``), keyed as
    notifications keys it: the rest are _text's arguments."""
    purpose = f"instalment_{stage}"
    key = f"instalment:loan-1:{number}:{due or f'2027-0{number}-01'}|{PHONE}|{purpose}"
    return (sms_id, "order-1", rest.pop("to", PHONE), purpose, {"key": key, **rest})


def _confirmed_unpaid(log: Log, h: History) -> History:
    """order-1 confirmed, its payment.authorized never published."""
    log.records = [
        r
        for r in log.records
        if not (b"payment.authorized" in (r.value or b"") and b"order-1" in (r.value or b""))
    ]
    return _rebuild(log, h)


def _dead_letter_without_its_headers(log: Log, h: History) -> History:
    log.raw(Topic.ORDER_EVENTS.dlq, b"{}", {"dlq.error": "handler_error"})
    return _rebuild(log, h)


def _unexpected_dead_letter(log: Log, h: History) -> History:
    log.raw(
        Topic.ORDER_EVENTS.dlq,
        b"{}",
        {
            "dlq.topic": Topic.ORDER_EVENTS.value,
            "dlq.partition": "0",
            "dlq.offset": "1",
            "dlq.group": "caravan-inventory",
            "dlq.error": "handler_error",
        },
    )
    return _rebuild(log, h)


def _missing_dead_letter(log: Log, h: History) -> History:
    log.records = [r for r in log.records if not r.topic.endswith(".dlq")]
    return _rebuild(log, h)


BROKEN: dict[str, tuple[Callable[[Log, History], History], str]] = {
    "a cancelled event lost": (_lose_terminal, "one_terminal_event"),
    "two terminal events": (_second_terminal, "one_terminal_event"),
    "an event after the end": (_event_after_terminal, "nothing_after_terminal"),
    "a request never answered": (_lost_request, "request_answered"),
    "database disagrees": (_db(lambda db: db.orders.update({"order-1": "pending"})), "order_state"),
    "stock created": (
        _db(lambda db: db.lots.__setitem__(0, Lot("LOT-1", "SKU", 10, 7, 0, 4, 0))),
        "stock_conserved",
    ),
    "negative stock": (
        _db(lambda db: db.lots.__setitem__(0, Lot("LOT-1", "SKU", 10, 11, 0, 4, -5))),
        "stock_nonnegative",
    ),
    "oversold": (
        _db(lambda db: db.lots.__setitem__(0, Lot("LOT-1", "SKU", 3, 0, 0, 3, 0))),
        "not_oversold",
    ),
    "confirmed without stock": (
        _db(lambda db: db.holds.update({"order-2": "released"})),
        "confirmed_holds_stock",
    ),
    "charged twice": (_double_charge, "one_authorised_payment"),
    "over the credit limit": (
        _db(lambda db: db.credit_limits.update({"buyer": 3999})),
        "credit_limit",
    ),
    "cancelled keeps stock": (
        _db(lambda db: db.holds.update({"order-3": "reserved"})),
        "cancelled_holds_no_stock",
    ),
    "cancelled keeps a loan": (
        _db(lambda db: db.loans.append(Loan("loan-3", "order-3", "buyer", 100, "active"))),
        "cancelled_holds_no_loan",
    ),
    "cancelled keeps a charge": (
        _db(lambda db: db.payments.update({"order-3": "authorized"})),
        "cancelled_holds_no_charge",
    ),
    "cancelled, its charge's void refused": (
        _db(lambda db: db.payments.update({"order-3": "void_refused"})),
        "cancelled_holds_no_charge",
    ),
    "a refund said twice": (_refund("order-3", times=2), "one_refund"),
    "a refund of a confirmed order": (_refund("order-1"), "refund_was_owed"),
    "a refund nothing said was owed": (_refund("order-3", owed=None), "refund_was_owed"),
    "a refund of another amount than owed": (_refund("order-3", owed=1500), "refund_was_owed"),
    "a refund texted twice": (
        lambda log, h: _texts(
            ("sms-3-refund", "order-3", PHONE, "refund_paid", {}),
            ("sms-3-refund-b", "order-3", PHONE, "refund_paid", {"key": "again"}),
        )(log, _refund("order-3")(log, h)),
        "refund_told_once",
    ),
    "a refund texted, none said": (
        _texts(("sms-1-refund", "order-1", PHONE, "refund_paid", {})),
        "refund_told_once",
    ),
    "a ledger transaction unbalanced": (
        _db(lambda db: db.ledger.__setitem__(0, replace(db.ledger[0], amount_fen=2001))),
        "ledger_balanced",
    ),
    "a receivable that is not the outstanding principal": (
        _db(lambda db: db.loans.__setitem__(0, replace(db.loans[0], outstanding_fen=1500))),
        "receivable_is_outstanding",
    ),
    "sellers owed less than the payment": (
        _db(lambda db: db.payables.__setitem__(0, replace(db.payables[0], amount_fen=1500))),
        "sellers_owed_the_payment",
    ),
    "a loan disbursed twice": (
        _db(lambda db: db.ledger.extend(_disbursed("order-1", "loan-1", "disburse:loan-1:again"))),
        "money_taken_once",
    ),
    "authorised, never posted": (
        _db(lambda db: db.ledger.__delitem__(slice(2, 4))),
        "money_taken_once",
    ),
    "confirmed without a payment": (
        _db(lambda db: db.payments.update({"order-1": "declined"})),
        "confirmed_has_payment",
    ),
    "confirmed, its payment voided, not by an operator after the sale": (
        _void_after_sale(marked=False),
        "confirmed_has_payment",
    ),
    "cancelled, still paid": (
        _db(lambda db: db.payments.update({"order-3": "authorized"})),
        "cancelled_has_no_payment",
    ),
    "sellers owed for a payment voided": (
        _db(lambda db: db.payables.append(Payable("order-3", "seller", 2000, "owed"))),
        "sellers_owed_the_payment",
    ),
    "a seller debited back in the ledger, its payable owed": (
        _db(lambda db: db.ledger.extend(_taken_back("order-1", 500))),
        "payables_agree_with_the_ledger",
    ),
    "a seller's credit booked to another seller": (
        _db(lambda db: db.ledger.__setitem__(1, replace(db.ledger[1], account="seller_payable:x"))),
        "payables_agree_with_the_ledger",
    ),
    "a seller's payable owed, never credited": (
        _db(lambda db: db.payables.append(Payable("order-1", "seller-b", 500, "owed"))),
        "payables_agree_with_the_ledger",
    ),
    "a seller's payable credited twice": (
        _db(lambda db: db.ledger.extend(_taken_back("order-1", -2000))),
        "payables_agree_with_the_ledger",
    ),
    "a seller's payable cancelled, the ledger not debited back": (
        _db(lambda db: db.payables.__setitem__(0, replace(db.payables[0], status="cancelled"))),
        "payables_agree_with_the_ledger",
    ),
    "a loan left active, its payment voided": (
        _db(lambda db: db.payments.update({"order-1": "voided"})),
        "loan_has_its_payment",
    ),
    "a loan for an order that does not exist": (
        _db(lambda db: _forged(db, "forged-1", "authorized", loan="active")),
        "money_without_an_order",
    ),
    "a platform collection for an order that does not exist": (
        _db(lambda db: _forged(db, "forged-2", "authorized")),
        "money_without_an_order",
    ),
    "a platform order awaiting its money for an order that does not exist": (
        _db(lambda db: _forged(db, "forged-3", "awaiting", owed="pending")),
        "money_without_an_order",
    ),
    "two SMS for one purpose": (
        _texts(("sms-1b", "order-1", PHONE, "order_confirmed", {})),
        "buyer_told_once",
    ),
    "buyer never told": (_retext("sms-1", purpose="new_order"), "buyer_told_once"),
    "a confirmed order texted 'cancelled'": (
        _retext("sms-1", purpose="order_cancelled"),
        "buyer_told_the_outcome",
    ),
    "a cancelled order texted 'confirmed'": (
        _retext("sms-3", purpose="order_confirmed"),
        "buyer_told_the_outcome",
    ),
    "the outcome texted to another phone": (
        _retext("sms-2", to=OTHER_PHONE),
        "sms_to_the_buyer",
    ),
    "a reminder texted to another phone": (
        _texts(_reminder("sms-r1", 1, to=OTHER_PHONE)),
        "sms_to_the_buyer",
    ),
    "an outcome text stuck in sending": (_retext("sms-1", status="sending"), "sms_sent"),
    "an outcome text never sent": (_retext("sms-3", status="pending"), "sms_sent"),
    "a text failed without sms.failed": (_retext("sms-2", status="failed"), "sms_sent"),
    "a seller's text stuck in sending": (
        _retext("sms-2-seller", status="sending"),
        "sms_sent",
    ),
    "a seller never told": (_retext("sms-1-seller", dropped=True), "sellers_told_once"),
    "a seller told twice": (
        _texts(("sms-1-seller-b", "order-1", SELLER_PHONE, "new_order", {})),
        "sellers_told_once",
    ),
    "a seller told of a cancelled order": (
        _texts(("sms-3-seller", "order-3", SELLER_PHONE, "new_order", {})),
        "sellers_told_once",
    ),
    "an instalment reminded twice at one stage": (
        _texts(_reminder("sms-r1", 1), _reminder("sms-r1b", 1, due="2027-01-02")),
        "reminded_once",
    ),
    "a reminder naming no instalment": (
        _texts(("sms-r1", "order-1", PHONE, "instalment_today", {"key": "event-1|r"})),
        "reminded_once",
    ),
    "a text sent twice": (_sent_again, "one_sms"),
    "confirmed, no payment.authorized": (_confirmed_unpaid, "confirmed_is_paid"),
    "a dead letter that does not say where it came from": (
        _dead_letter_without_its_headers,
        "dlq_headers",
    ),
    "a dead letter nobody injected": (_unexpected_dead_letter, "dlq_only_the_poison"),
    "a poison record not dead-lettered": (_missing_dead_letter, "dlq_has_the_poison"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_broken_history_is_caught_with_evidence(case: str) -> None:
    log, history = correct()
    breaks, expected = BROKEN[case]
    violations: list[Violation] = check(breaks(log, history))
    assert expected in {v.check for v in violations}, violations
    assert all(v.evidence for v in violations)


DATABASE_CASES = [case for case, (_, expected) in BROKEN.items() if expected in DATABASE_CHECKS]


@pytest.mark.parametrize("case", DATABASE_CASES)
def test_the_database_checks_catch_a_broken_database_alone(case: str) -> None:
    """What ``caravan check`` runs (:func:`check_database`, no topic read) catches each
    broken database of :data:`BROKEN` that a check of it is for, and names only checks
    :data:`DATABASE_CHECKS` says the meaning of."""
    log, history = correct()
    breaks, expected = BROKEN[case]
    violations = check_database(breaks(log, history).db)
    assert expected in {v.check for v in violations}, violations
    assert {v.check for v in violations} <= DATABASE_CHECKS.keys(), violations


def test_every_database_check_is_proved_and_its_runbook_is_a_section() -> None:
    proved = {BROKEN[case][1] for case in DATABASE_CASES}
    assert proved == DATABASE_CHECKS.keys()
    sections = anchors(REPO_ROOT / "docs" / "operations.md")
    for name, meaning in DATABASE_CHECKS.items():
        if meaning.runbook is not None:
            page, _, section = meaning.runbook.partition("#")
            assert page == "docs/operations.md" and section in sections, (name, meaning)


def test_a_cancelled_order_still_paid_is_said_how_a_replay_that_skipped_it_is_mended() -> None:
    """A replay of payments' group started past an order's ``order.cancelled``
    (``--allow-skip``; a drill of 2026-12-07) left its payment authorised, for good:
    ``caravan check`` said only "behind or paused: its lag; or that record dead-lettered", and
    no letter was there. It says the replay from the cancellation that has payments void it."""
    log, history = correct()
    breaks, _ = BROKEN["cancelled, still paid"]
    violations = check_database(breaks(log, history).db)
    [said] = Checked({}, violations, 0, 0).as_json()["violations"]
    assert said["check"] == "cancelled_has_no_payment", said
    assert said["means"].endswith(
        "or that record dead-lettered; or skipped by a replay of caravan-payments that started"
        " after it, which nothing reads again by itself: caravan pause payments, caravan replay"
        " --topic orders.events.v1 --group caravan-payments --from-timestamp of its"
        " cancellation (caravan orders show), caravan resume payments)"
    ), said


def test_every_check_the_checker_can_fail_is_listed_once_and_proved() -> None:
    """bench/soak.py kept its own list of the checks, which lacked five the checker had come
    to fail (``loan_has_its_payment``, ``money_without_an_order``, ``one_refund``,
    ``refund_was_owed``, ``refund_told_once``): its results said fewer were checked. The list
    is the checker's :data:`CHECKS`, each name its code fails (a ``Violation`` or ``fail``
    call's first argument) once, and each proved by a broken history of :data:`BROKEN`."""
    code = ast.parse((REPO_ROOT / "caravan" / "reliability" / "history.py").read_text())
    failed: set[str] = set()
    for call in ast.walk(code):
        if not isinstance(call, ast.Call) or not call.args:
            continue
        called = call.func.attr if isinstance(call.func, ast.Attribute) else None
        if isinstance(call.func, ast.Name):
            called = call.func.id
        if called not in ("Violation", "fail"):
            continue
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            failed.add(first.value)
        else:  # only the fail helpers pass on the name they are given
            assert ast.unparse(first) == "check", ast.unparse(call)
    assert len(CHECKS) == len(set(CHECKS)), CHECKS
    assert set(CHECKS) == failed, set(CHECKS) ^ failed
    assert {expected for _, expected in BROKEN.values()} == failed


def test_a_credit_limit_lowered_below_what_is_owed_is_no_fault_of_the_books() -> None:
    """An operator may lower a limit below a buyer's loans (``caravan payments credit-set``):
    the full check's ``credit_limit`` says so; ``caravan check``'s do not."""
    _, history = correct()
    history.db.credit_limits["buyer"] = 1
    assert "credit_limit" in {v.check for v in check(history)}
    assert check_database(history.db) == []


def test_other_sources_and_earlier_dead_letters_are_out_of_scope() -> None:
    log, history = correct()
    log.add(
        OrderRequested(
            order_ref="NOT-MINE",
            buyer=Buyer(id="buyer", phone=PHONE),
            lines=[OrderLine(sku="SKU", quantity=1)],
            payment=PaymentRequest(method="prepaid"),
        ),
        source="storefront/other",
    )
    broken = _unexpected_dead_letter(log, history)
    assert {v.check for v in check(broken)} == {"dlq_only_the_poison"}
    scoped = replace(broken, dlq_since={Topic.ORDER_EVENTS.value: {0: 2}})
    assert check(scoped) == []


def test_sellers_sharing_a_phone_get_a_text_each() -> None:
    """Two sellers of one order on one phone (a cooperative's manager): two texts to it."""
    log, history = correct()
    log.records = [
        r
        for r in log.records
        if not (b"stock.reserved" in (r.value or b"") and b'"order-1"' in (r.value or b""))
    ]
    _reserved(log, "order-1", ["seller", "seller-b"])
    db = history.db
    db.seller_phones["seller-b"] = SELLER_PHONE
    key = f"event-sms-1-seller|{SELLER_PHONE}|new_order|seller-b"
    _text(log, db, "sms-1-seller-b", "order-1", SELLER_PHONE, "new_order", key=key)
    assert check(_rebuild(log, history)) == []


def test_a_reminder_for_each_instalment_and_stage() -> None:
    """Reminders 1..3 of one loan, and instalment 1 at each of its stages: one text each."""
    log, history = correct()
    reminders = [_reminder(f"sms-r{n}", n) for n in (1, 2, 3)] + [
        _reminder(f"sms-r1-{stage}", 1, stage) for stage in ("today", "overdue")
    ]
    assert check(_texts(*reminders)(log, history)) == []


def test_texts_refused_by_the_gateway_or_not_to_be_sent() -> None:
    """Texts the gateway refused, or sent and then undelivered (each with its sms.failed),
    and texts suppressed (the recipient opted out, the instalment paid first) were not lost."""
    log, history = correct()
    history = _retext("sms-3", status="failed", failed="rejected")(log, history)
    history = _retext("sms-2", status="failed", sent=True, failed="undelivered")(log, history)
    history = _retext("sms-1-seller", status="suppressed")(log, history)
    history = _texts(_reminder("sms-r1", 1, status="suppressed"))(log, history)
    assert check(history) == []

"""The history checker on hand-made histories: a correct one passes, and each kind of broken
history is caught by its check, with evidence."""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from caravan.reliability.history import (
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
)
from shared.events.envelope import EventData, new_event
from shared.events.notifications import SmsSent
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
from shared.events.payments import PaymentAuthorized
from shared.topics import Topic

SOURCE = "storefront/checker"
PHONE = "+8613900000101"


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
        OrderPlaced(order_id=order_id, order_ref=ref, source=SOURCE, buyer_id="buyer", lines=lines)
    )
    if confirmed:
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
    db.sms.append(Sms(f"sms-{n}", order_id, PHONE, purpose))
    log.add(
        SmsSent(
            sms_id=f"sms-{n}",
            to=PHONE,
            locale="en",
            text="hi",
            encoding="GSM-7",
            segments=1,
            order_id=order_id,
            purpose=purpose,
        )
    )
    return order_id


def correct() -> tuple[Log, History]:
    log = Log()
    db = DatabaseState(lots=[Lot("LOT-1", "SKU", 10, 6, 0, 4, 0)], credit_limits={"buyer": 5000})
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


def _double_charge(log: Log, h: History) -> History:
    log.add(
        PaymentAuthorized(order_id="order-1", buyer_id="buyer", method="prepaid", amount_fen=2000)
    )
    return _rebuild(log, h)


def _second_sms(log: Log, h: History) -> History:
    h = _db(lambda db: db.sms.append(Sms("sms-1b", "order-1", PHONE, "order_confirmed")))(log, h)
    return h


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
    "cancelled, still paid": (
        _db(lambda db: db.payments.update({"order-3": "authorized"})),
        "cancelled_has_no_payment",
    ),
    "two SMS for one purpose": (_second_sms, "one_sms"),
    "buyer never told": (
        _db(lambda db: db.sms.__setitem__(0, Sms("sms-1", "order-1", PHONE, "new_order"))),
        "buyer_told_once",
    ),
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

"""The history checker: every record of every topic (from the start) and the database state
at the end, checked against what Caravan promises. Used by ``tests/reliability`` and by
``bench/soak.py`` alike.

It returns violations with their evidence (an empty list means the history is correct).
A history may be scoped to one ``source`` (the storefront a run used), so that a run on a
system shared with other tests checks its own orders; the stock, credit and money checks
(:func:`check_database`: the lots' counters and the payments ledger) are always over the whole
database. ``caravan check`` runs :func:`check_database` alone, on any system.
"""

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifications.domain.delivery import REFUND_PAID, REMINDER_PURPOSES, reminder_of
from services.payments.domain.ledger import seller_payable
from shared.events.registry import PoisonRecord, parse_record
from shared.topics import EventType, Topic

TERMINAL = (EventType.ORDER_CONFIRMED.value, EventType.ORDER_CANCELLED.value)
# The text telling the buyer how an order ended, by its terminal event
# (services.notifications.handlers).
OUTCOME_SMS = {
    EventType.ORDER_CONFIRMED.value: "order_confirmed",
    EventType.ORDER_CANCELLED.value: "order_cancelled",
}
BUYER_SMS_PURPOSES = tuple(OUTCOME_SMS.values())
SELLER_SMS_PURPOSE = "new_order"
# A text's states once the gateway took it; "suppressed": its recipient opted out (or a
# reminder's instalment was paid first), never to be sent.
SENT_SMS = ("sent", "delivered")
SUPPRESSED_SMS = "suppressed"
# Payment states that hold the buyer's money (or are about to).
# A void the gateway refused for good (void_refused) holds it too, owed back to the buyer,
# until operations record its refund made by hand (refunded: held no longer).
HOLDING_PAYMENT = ("pending", "charging", "authorized", "voiding", "void_refused")
# A platform's order waiting for its adapter's word that the platform was paid: owed no one
# yet, but authorised the moment that word comes.
AWAITING_PLATFORM = "awaiting"
# What a payment is once an operator voided it: the gateway told to void its charge, voided,
# refused (owed back by hand), or refunded by hand.
VOIDED_BY_HAND = ("voiding", "voided", "void_refused", "refunded")
HOLDING_STOCK = ("reserved", "sold")
# Ledger transactions that take an order's money in: a loan paying the sellers, a prepaid
# charge, what a marketplace platform collected (services.payments.domain.ledger).
MONEY_IN = ("loan_disbursed", "prepaid_charged", "platform_collected")
LOAN_RECEIVABLE = "loan_receivable"
SELLERS = seller_payable("")  # the prefix of each seller's account: seller_payable:<seller>
ORDERS_SHOWN = 5  # of a seller's orders whose payables and ledger differ, those named


NO_RUNBOOK = (
    "none: Caravan's services never do this; a bug, or a change made by hand in the"
    " database: report it with the evidence"
)


@dataclass(frozen=True)
class Meaning:
    """What a check of :func:`check_database` means, in a line, and the runbook of
    docs/operations.md to follow when it fails (None: :data:`NO_RUNBOOK`)."""

    means: str
    runbook: str | None = None


DATABASE_CHECKS = {
    "stock_nonnegative": Meaning("no lot's counter (available, reserved, sold, spoiled) below 0"),
    "stock_conserved": Meaning(
        "each lot's available + reserved + sold + spoiled is what it received: nothing sold or"
        " held that was not there"
    ),
    "ledger_balanced": Meaning("each ledger transaction, and each loan's entries, sum to 0"),
    "receivable_is_outstanding": Meaning(
        "each loan's loan_receivable in the ledger is its outstanding principal"
    ),
    "sellers_owed_the_payment": Meaning(
        "the sellers are owed each authorised payment in full, and nothing for one not authorised"
    ),
    "payables_agree_with_the_ledger": Meaning(
        "each seller is owed in payables (caravan payments payables) what its account in the"
        " ledger (seller_payable:<seller>) says, order by order, of every seller either side"
        " names: a payable owed credited once with its fen, its owed fen the account's"
        " balance, its cancelled fen what the ledger debited back"
    ),
    "loan_has_its_payment": Meaning("a loan not voided is for an authorised payment"),
    "money_taken_once": Meaning(
        "no order's money taken in twice (a loan disbursed, a prepaid charge, a platform's"
        " collection), and each authorised payment taken in once"
    ),
    "confirmed_has_payment": Meaning(
        "a confirmed order has an authorised payment, or one an operator voided after the sale"
    ),
    "cancelled_has_no_payment": Meaning(
        "a cancelled order has no authorised payment: payments voids it when it reads the"
        " order's order.cancelled (until then, behind or paused: its lag; or that record"
        " dead-lettered; or skipped by a replay of caravan-payments that started after it,"
        " which nothing reads again by itself: caravan pause payments, caravan replay --topic"
        " orders.events.v1 --group caravan-payments --from-timestamp of its cancellation"
        " (caravan orders show), caravan resume payments)",
        "docs/operations.md#dead-letters-waiting",
    ),
    "money_without_an_order": Meaning(
        "no money lent, taken or owed for an order the orders service never had",
        "docs/operations.md#a-forged-orders-money",
    ),
}
"""Every check :func:`check_database` runs, by name."""

CHECKS = (
    "request_answered",
    "one_terminal_event",
    "nothing_after_terminal",
    "order_state",
    "not_oversold",
    "confirmed_holds_stock",
    "one_authorised_payment",
    "confirmed_is_paid",
    "credit_limit",
    "one_refund",
    "refund_was_owed",
    "refund_told_once",
    "cancelled_holds_no_stock",
    "cancelled_holds_no_loan",
    "cancelled_holds_no_charge",
    "buyer_told_once",
    "buyer_told_the_outcome",
    "sms_to_the_buyer",
    "sellers_told_once",
    "reminded_once",
    "sms_sent",
    "one_sms",
    "dlq_headers",
    "dlq_has_the_poison",
    "dlq_only_the_poison",
    *DATABASE_CHECKS,
)
"""Every check :func:`check` runs, by name (a :class:`Violation`'s ``check``): those over the
records and the database, then :data:`DATABASE_CHECKS`; what ``bench/soak.py``'s results say
were checked."""


class KafkaRecord(Protocol):
    """What the checker reads of a Kafka record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class Injected:
    """A poison record put on a topic on purpose: where it landed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Violation:
    check: str
    subject: str
    evidence: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.subject}: {self.evidence}"


@dataclass(frozen=True)
class Lot:
    lot_id: str
    sku: str
    received: int
    available: int
    reserved: int
    sold: int
    spoiled: int


@dataclass(frozen=True)
class Loan:
    loan_id: str
    order_id: str
    buyer_id: str
    outstanding_fen: int
    status: str


@dataclass(frozen=True)
class Sms:
    sms_id: str
    order_id: str | None
    to: str
    purpose: str
    status: str
    dedup_key: str
    last_error: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    txn_id: str
    kind: str
    account: str
    amount_fen: int
    order_id: str | None
    loan_id: str | None


@dataclass(frozen=True)
class Payable:
    order_id: str
    seller_id: str
    amount_fen: int
    status: str


@dataclass
class DatabaseState:
    """What the services' tables say at the end of a run."""

    orders: dict[str, str] = field(default_factory=dict)  # order_id -> status
    lots: list[Lot] = field(default_factory=list)
    holds: dict[str, str] = field(default_factory=dict)  # order_id -> reservation status
    payments: dict[str, str] = field(default_factory=dict)  # order_id -> payment status
    paid_fen: dict[str, int] = field(default_factory=dict)  # order_id -> the payment's amount
    loans: list[Loan] = field(default_factory=list)
    credit_limits: dict[str, int] = field(default_factory=dict)  # buyer_id -> limit
    sms: list[Sms] = field(default_factory=list)
    seller_phones: dict[str, str] = field(default_factory=dict)  # seller_id -> phone
    ledger: list[LedgerEntry] = field(default_factory=list)
    payables: list[Payable] = field(default_factory=list)
    # Orders whose payment an operator voided after the sale (caravan payments void-sold):
    # confirmed, their buyer refunded.
    voided_after_sale: set[str] = field(default_factory=set)


async def read_database(engine: AsyncEngine, texts: bool = True) -> DatabaseState:
    """Read the tables the checks need (each service's schema, every one in the one database)
    in one read-only REPEATABLE READ transaction: one snapshot, as of its first statement.
    Read table by table as each committed, a run against a live system saw an order confirmed
    after its payments were read, and a payment it did not have. Without ``texts``, no
    ``notifications.sms`` nor sellers' phones (:func:`check_database` reads neither; the
    texts are the most rows an order has)."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)

        async def rows(query: str) -> list[Any]:
            return list((await conn.execute(text(query))).all())

        payments = await rows(
            "select order_id, status, amount_fen, voided_after_sale_at is not null"
            " from payments.payments"
        )
        return DatabaseState(
            orders={r[0]: r[1] for r in await rows("select order_id, status from orders.orders")},
            lots=[
                Lot(*r)
                for r in await rows(
                    "select lot_id, sku, received, available, reserved, sold, spoiled"
                    " from inventory.lots"
                )
            ],
            holds={
                r[0]: r[1]
                for r in await rows("select order_id, status from inventory.reservations")
            },
            payments={r[0]: r[1] for r in payments},
            paid_fen={r[0]: int(r[2] or 0) for r in payments},
            voided_after_sale={r[0] for r in payments if r[3]},
            loans=[
                Loan(*r)
                for r in await rows(
                    "select loan_id, order_id, buyer_id, outstanding_fen, status"
                    " from payments.loans"
                )
            ],
            credit_limits={
                r[0]: int(r[1])
                for r in await rows("select buyer_id, credit_limit_fen from payments.credit_lines")
            },
            sms=[
                Sms(*r)
                for r in await rows(
                    'select sms_id, order_id, "to", purpose, status, dedup_key, last_error'
                    " from notifications.sms"
                )
            ]
            if texts
            else [],
            seller_phones={
                r[0]: r[1] for r in await rows("select seller_id, phone from notifications.sellers")
            }
            if texts
            else {},
            ledger=[
                LedgerEntry(*r)
                for r in await rows(
                    "select txn_id, kind, account, amount_fen, order_id, loan_id"
                    " from payments.ledger_entries"
                )
            ],
            payables=[
                Payable(*r)
                for r in await rows(
                    "select order_id, seller_id, amount_fen, status from payments.payables"
                )
            ],
        )


@dataclass(frozen=True)
class _Event:
    record: KafkaRecord
    id: str
    type: str
    source: str
    data: Mapping[str, Any]


@dataclass
class History:
    """A run's records and end state, and what the checks need to know about the run."""

    records: Iterable[KafkaRecord]
    db: DatabaseState
    injected: Sequence[Injected] = ()
    # The consumer groups of each topic: each injected poison record is dead-lettered by each.
    consumers: Mapping[str, Iterable[str]] = field(default_factory=dict)
    # Only orders (and requests) of this source are checked; None: every order.
    source: str | None = None
    # Dead letters of records before these offsets (topic -> partition -> offset) belong to
    # someone else's run and are not checked.
    dlq_since: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    # Orders whose events were published as the orders (or inventory) service would, by
    # someone playing its part (a test): the orders service never had them, on purpose.
    placed_elsewhere: Collection[str] = ()


def check(history: History) -> list[Violation]:
    """Every check over ``history``; an empty list when it keeps every promise."""
    return _Checker(history).run()


def check_database(db: DatabaseState, placed_elsewhere: Collection[str] = ()) -> list[Violation]:
    """The checks that need only the database (part of :func:`check`; what ``caravan check``
    runs): each lot's counters (:func:`check_stock`) and the money (:func:`check_money`).
    The others read the topics' records as well. ``credit_limit``, of the database alone
    too, is not one of them: an operator may lower a buyer's limit below what they owe
    (``caravan payments credit-set``), which stops new loans and is no fault of the books;
    the runs lower none."""
    return [*check_stock(db), *check_money(db, placed_elsewhere)]


def check_stock(db: DatabaseState) -> list[Violation]:
    """Each lot's counters: none negative, and ``available + reserved + sold + spoiled`` what
    it received (so never more sold or held than was there: never oversold)."""
    violations: list[Violation] = []
    for lot in db.lots:
        counters = {
            "available": lot.available,
            "reserved": lot.reserved,
            "sold": lot.sold,
            "spoiled": lot.spoiled,
        }
        negative = {k: v for k, v in counters.items() if v < 0}
        if negative:
            violations.append(
                Violation("stock_nonnegative", lot.lot_id, f"negative counters {negative}")
            )
        if sum(counters.values()) != lot.received:
            violations.append(
                Violation(
                    "stock_conserved",
                    lot.lot_id,
                    f"{counters} add up to {sum(counters.values())}, received {lot.received}",
                )
            )
    return violations


def check_money(db: DatabaseState, placed_elsewhere: Collection[str] = ()) -> list[Violation]:
    """The money checks over the whole database (part of :func:`check`): every ledger
    transaction, and every loan's entries, sum to zero; each loan's receivable is its
    outstanding principal; each authorised payment is owed to the sellers in full, and
    sellers are owed only for an authorised payment; each seller owed in payables what its
    account in the ledger says (:func:`_payables_agree_with_the_ledger`); a loan not voided
    has its payment authorised; no order's money was taken in twice (loan disbursed, prepaid
    charge, platform collection), and each authorised payment of more than 0 fen was taken
    in once; a confirmed order has an authorised payment (or one an operator voided after the
    sale: its buyer refunded), a cancelled one none; and no money is held for an order the
    orders service never had (:func:`_money_without_an_order`), but for
    those ``placed_elsewhere`` (a test playing the orders service's part)."""
    violations: list[Violation] = []

    def fail(check: str, subject: str, evidence: str) -> None:
        violations.append(Violation(check, subject, evidence))

    by_txn: dict[str, int] = defaultdict(int)
    by_loan: dict[str, int] = defaultdict(int)
    receivable: dict[str, int] = defaultdict(int)
    money_in: dict[str, set[str]] = defaultdict(set)
    for e in db.ledger:
        by_txn[e.txn_id] += e.amount_fen
        if e.loan_id is not None:
            by_loan[e.loan_id] += e.amount_fen
            if e.account == LOAN_RECEIVABLE:
                receivable[e.loan_id] += e.amount_fen
        if e.kind in MONEY_IN and e.order_id is not None:
            money_in[e.order_id].add(e.txn_id)
    for txn_id, total in by_txn.items():
        if total != 0:
            fail("ledger_balanced", txn_id, f"its entries sum to {total} fen")
    for loan_id, total in by_loan.items():
        if total != 0:
            fail("ledger_balanced", f"loan {loan_id}", f"its entries sum to {total} fen")
    for loan in db.loans:
        if receivable[loan.loan_id] != loan.outstanding_fen:
            fail(
                "receivable_is_outstanding",
                loan.loan_id,
                f"{LOAN_RECEIVABLE} {receivable[loan.loan_id]} fen,"
                f" outstanding {loan.outstanding_fen} fen",
            )
    owed: dict[str, int] = defaultdict(int)
    for payable in db.payables:
        if payable.status == "owed":
            owed[payable.order_id] += payable.amount_fen
    for order_id, status in db.payments.items():
        if status == "authorized" and owed[order_id] != db.paid_fen.get(order_id, 0):
            fail(
                "sellers_owed_the_payment",
                order_id,
                f"authorised {db.paid_fen.get(order_id, 0)} fen, owed {owed[order_id]} fen",
            )
    for order_id, fen in owed.items():
        payment = db.payments.get(order_id)
        if fen and payment != "authorized":
            fail(
                "sellers_owed_the_payment",
                order_id,
                f"sellers owed {fen} fen for a payment that is {payment!r}, not authorised",
            )
    for loan in db.loans:
        payment = db.payments.get(loan.order_id)
        if loan.status != "voided" and payment != "authorized":
            fail(
                "loan_has_its_payment",
                loan.loan_id,
                f"{loan.status}, {loan.outstanding_fen} fen outstanding, for order"
                f" {loan.order_id} whose payment is {payment!r}, not authorised",
            )
    for order_id, txns in money_in.items():
        if len(txns) > 1:
            fail("money_taken_once", order_id, f"{len(txns)} transactions: {sorted(txns)}")
    for order_id, status in db.payments.items():
        if status == "authorized" and db.paid_fen.get(order_id, 0) > 0 and not money_in[order_id]:
            fail("money_taken_once", order_id, "authorised, and no money taken in the ledger")
    for order_id, status in db.orders.items():
        payment = db.payments.get(order_id)
        voided_after_sale = order_id in db.voided_after_sale and payment in VOIDED_BY_HAND
        if status == "confirmed" and payment != "authorized" and not voided_after_sale:
            fail("confirmed_has_payment", order_id, f"its payment is {payment!r}")
        if status == "cancelled" and payment == "authorized":
            fail("cancelled_has_no_payment", order_id, "its payment is 'authorized'")
    violations.extend(_payables_agree_with_the_ledger(db))
    violations.extend(_money_without_an_order(db, placed_elsewhere))
    return violations


def _payables_agree_with_the_ledger(db: DatabaseState) -> list[Violation]:
    """Each seller's payables (``payments.payables``: an order's fen and status, what
    ``caravan payments payables`` lists through the ledger's credit of the seller's account)
    against the account itself, order by order, over every (order, seller) either names: the
    ledger's credits less its debits back are the payable's fen if it is ``owed`` (one credit
    of it), and nothing otherwise; its debits back are the payable's fen if it is
    ``cancelled`` after a credit (one never credited, a charge not made, is nothing to the
    seller), and nothing otherwise. So a payable owed that the ledger never credited (the
    seller on neither payables' list nor the ledger's) and one credited twice (payables lists
    it twice, the ledger owes it twice) differ as much as a debit posted by hand; per seller,
    over all time, its owed fen is its account's balance, and a week's (the payables of the
    credits of the week) those credits less their debits back. One violation per seller
    whose figures differ, with its two figures of all time and the orders that differ (an
    entry of no order is of none: payables never reads it)."""
    Pair = tuple[str | None, str]  # (order, seller)
    owed: dict[Pair, int] = defaultdict(int)  # the ledger's: credited less debited back
    back: dict[Pair, int] = defaultdict(int)
    credits: dict[Pair, int] = defaultdict(int)
    for e in db.ledger:
        if e.account.startswith(SELLERS):
            pair = (e.order_id, e.account[len(SELLERS) :])
            owed[pair] -= e.amount_fen
            if e.amount_fen > 0:
                back[pair] += e.amount_fen
            else:
                credits[pair] += 1
    said: dict[Pair, tuple[int, int]] = {}  # the payable's owed and cancelled fen
    for p in db.payables:
        pair = (p.order_id, p.seller_id)
        if p.status == "owed":
            said[pair] = (p.amount_fen, 0)
        elif p.status == "cancelled" and credits.get(pair):
            said[pair] = (0, p.amount_fen)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    differ: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pair in owed.keys() | said.keys():
        order_id, seller = pair
        figures = (owed.get(pair, 0), back.get(pair, 0), *said.get(pair, (0, 0)))
        total = totals[seller]
        for n, figure in enumerate(figures):
            total[n] += figure
        if figures[:2] != figures[2:]:
            times = credits.get(pair, 0)
            credited = (
                "; never credited" if not times else f"; {times} credits" if times > 1 else ""
            )
            differ[seller].append(
                (
                    order_id or "",
                    f"{order_id or 'no order'} (ledger {figures[0]} owed, {figures[1]} back;"
                    f" payables {figures[2]} owed, {figures[3]} cancelled{credited})",
                )
            )
    violations = []
    for seller, found in sorted(differ.items()):
        orders = [evidence for _, evidence in sorted(found)]
        more = f" and {len(orders) - ORDERS_SHOWN} more" if len(orders) > ORDERS_SHOWN else ""
        ledger_owed, ledger_back, payables_owed, cancelled = totals[seller]
        violations.append(
            Violation(
                "payables_agree_with_the_ledger",
                seller,
                f"the ledger owes it {ledger_owed} fen, payables {payables_owed} fen; debited"
                f" back {ledger_back} fen, payables cancelled {cancelled} fen; {len(orders)}"
                f" order(s) differ: {'; '.join(orders[:ORDERS_SHOWN])}{more}",
            )
        )
    return violations


def _money_without_an_order(
    db: DatabaseState, placed_elsewhere: Collection[str]
) -> list[Violation]:
    """Money lent, taken or owed for an order ``orders.orders`` never had: what an event
    forged on a topic the services trust makes payments do (a loan the buyer is reminded to
    repay, a platform's collection counted for an order that does not exist, a seller owed
    for it), one violation per order with all it holds."""
    held: dict[str, list[str]] = defaultdict(list)
    for loan in db.loans:
        if loan.status != "voided":
            held[loan.order_id].append(
                f"loan {loan.loan_id} {loan.status}, {loan.outstanding_fen} fen outstanding"
            )
    for order_id, status in db.payments.items():
        if status in (*HOLDING_PAYMENT, AWAITING_PLATFORM):
            held[order_id].append(f"payment {status!r} of {db.paid_fen.get(order_id, 0)} fen")
    owed: dict[str, dict[str, int]] = defaultdict(dict)
    for payable in db.payables:
        if payable.status == "owed":
            sellers = owed[payable.order_id]
            sellers[payable.seller_id] = sellers.get(payable.seller_id, 0) + payable.amount_fen
    for order_id, sellers in owed.items():
        held[order_id].append(f"sellers owed {dict(sorted(sellers.items()))} (fen)")
    return [
        Violation(
            "money_without_an_order",
            order_id,
            "the orders service never had this order (forged stock.reserved?), yet: "
            + "; ".join(found),
        )
        for order_id, found in sorted(held.items())
        if order_id not in db.orders and order_id not in placed_elsewhere
    ]


class _Checker:
    def __init__(self, history: History) -> None:
        self.h = history
        self.db = history.db
        self.violations: list[Violation] = []
        self.events: dict[str, list[_Event]] = defaultdict(list)
        self.dead_letters: list[KafkaRecord] = []
        for record in history.records:
            if record.topic.endswith(".dlq"):
                self.dead_letters.append(record)
                continue
            try:
                env = parse_record(Topic(record.topic), record.value).envelope
            except (PoisonRecord, ValueError):
                continue
            self.events[record.topic].append(_Event(record, env.id, env.type, env.source, env.data))
        for events in self.events.values():
            events.sort(key=lambda e: (e.record.partition, e.record.offset))
        placed = [
            e
            for e in self.events[Topic.ORDER_EVENTS.value]
            if e.type == EventType.ORDER_PLACED.value
            and (history.source is None or e.data.get("source") == history.source)
        ]
        self.placed: dict[str, _Event] = {}
        for event in placed:
            self.placed.setdefault(str(event.data["order_id"]), event)
        self.terminal: dict[str, _Event] = {}
        self.sellers: dict[str, set[str]] = defaultdict(set)  # order_id -> its sellers
        for e in self.events[Topic.INVENTORY_EVENTS.value]:
            if e.type == EventType.STOCK_RESERVED.value and e.data.get("order_id") in self.placed:
                for line in e.data.get("lines", []):
                    self.sellers[str(e.data["order_id"])].add(str(line["seller_id"]))

    def fail(self, check: str, subject: str, evidence: str) -> None:
        self.violations.append(Violation(check, subject, evidence))

    def run(self) -> list[Violation]:
        self.requests_answered()
        self.one_terminal_event()
        self.stock()
        self.payments()
        self.refunds()
        self.cancelled_holds_nothing()
        self.texts()
        self.dead_letters_are_the_poison()
        self.violations.extend(check_database(self.db, self.h.placed_elsewhere))
        return self.violations

    def _in_scope(self, event: _Event) -> bool:
        return self.h.source is None or event.source == self.h.source

    def requests_answered(self) -> None:
        """No lost order: each valid request is placed (or rejected) at least once."""
        answered = {
            (e.data.get("source"), e.data.get("order_ref"))
            for e in self.events[Topic.ORDER_EVENTS.value]
            if e.type in (EventType.ORDER_PLACED.value, EventType.ORDER_REJECTED.value)
        }
        for e in self.events[Topic.ORDER_REQUESTS.value]:
            if self._in_scope(e) and (e.source, e.data.get("order_ref")) not in answered:
                self.fail(
                    "request_answered",
                    f"{e.source}|{e.data.get('order_ref')}",
                    f"order.requested {e.id} at {_where(e.record)} was never placed nor rejected",
                )

    def one_terminal_event(self) -> None:
        by_order: dict[str, list[_Event]] = defaultdict(list)
        for e in self.events[Topic.ORDER_EVENTS.value]:
            order_id = e.data.get("order_id")
            if order_id in self.placed:
                by_order[str(order_id)].append(e)
        for order_id in self.placed:
            events = by_order[order_id]
            terminal_ids = list(dict.fromkeys(e.id for e in events if e.type in TERMINAL))
            if len(terminal_ids) != 1:
                kinds = [e.type for e in events if e.type in TERMINAL]
                self.fail(
                    "one_terminal_event",
                    order_id,
                    f"{len(terminal_ids)} distinct terminal events {kinds}",
                )
                if not terminal_ids:
                    continue
            first = next(e for e in events if e.id == terminal_ids[0])
            self.terminal[order_id] = first
            seen_before = {e.id for e in events if e.record.offset < first.record.offset}
            after = [
                e
                for e in events
                if e.record.offset > first.record.offset
                and e.id not in seen_before
                and e.id != first.id
            ]
            if after:
                self.fail(
                    "nothing_after_terminal",
                    order_id,
                    f"{first.type} at {_where(first.record)} followed by "
                    + ", ".join(f"{e.type} at {_where(e.record)}" for e in after),
                )
            status = self.db.orders.get(order_id)
            expected = first.type.removeprefix("order.")
            if status != expected:
                self.fail(
                    "order_state",
                    order_id,
                    f"the last event is {first.type} but orders.orders says {status!r}",
                )

    def stock(self) -> None:
        """What the orders confirmed took of the stock (the lots' counters are
        :func:`check_stock`'s, part of :func:`check_database`)."""
        received: dict[str, int] = defaultdict(int)
        for lot in self.db.lots:
            received[lot.sku] += lot.received
        confirmed: dict[str, int] = defaultdict(int)
        for order_id, terminal in self.terminal.items():
            if terminal.type != EventType.ORDER_CONFIRMED.value:
                continue
            for line in self.placed[order_id].data.get("lines", []):
                confirmed[str(line["sku"])] += int(line["quantity"])
            hold = self.db.holds.get(order_id)
            if hold not in HOLDING_STOCK:
                self.fail("confirmed_holds_stock", order_id, f"confirmed, but its hold is {hold!r}")
        for sku, quantity in confirmed.items():
            if quantity > received[sku]:
                self.fail(
                    "not_oversold",
                    sku,
                    f"{quantity} units in confirmed orders, {received[sku]} ever received",
                )

    def payments(self) -> None:
        authorised: dict[str, set[str]] = defaultdict(set)
        for e in self.events[Topic.PAYMENT_EVENTS.value]:
            order_id = str(e.data.get("order_id"))
            if e.type == EventType.PAYMENT_AUTHORIZED.value and order_id in self.placed:
                authorised[order_id].add(e.id)
        for order_id, ids in authorised.items():
            if len(ids) > 1:
                self.fail(
                    "one_authorised_payment", order_id, f"{len(ids)} payment.authorized: {ids}"
                )
        for order_id, terminal in self.terminal.items():
            if terminal.type == EventType.ORDER_CONFIRMED.value and not authorised.get(order_id):
                self.fail(
                    "confirmed_is_paid",
                    order_id,
                    "confirmed without payment.authorized"
                    f" (payment {self.db.payments.get(order_id)!r})",
                )
        outstanding: dict[str, int] = defaultdict(int)
        for loan in self.db.loans:
            if loan.status == "active":
                outstanding[loan.buyer_id] += loan.outstanding_fen
        for buyer, owed in outstanding.items():
            limit = self.db.credit_limits.get(buyer, 0)
            if owed > limit:
                self.fail(
                    "credit_limit", buyer, f"outstanding loans {owed} fen over the limit {limit}"
                )

    def refunds(self) -> None:
        """Each refund made by hand (``payment.refunded``, on payments' topic: no terminal
        event, an order cancelled keeps its one end) is said once, and pays what the order's
        ``payment.voided`` said was owed back (``refund_owed_fen``), of an order cancelled (or
        confirmed, its payment voided by an operator after the sale);
        its buyer is texted of it once at most (none once their number was erased), and of
        no refund not said."""
        owed: dict[str, int] = {}
        refunded: dict[str, list[_Event]] = defaultdict(list)
        for e in self.events[Topic.PAYMENT_EVENTS.value]:
            order_id = str(e.data.get("order_id"))
            if order_id not in self.placed:
                continue
            if e.type == EventType.PAYMENT_VOIDED.value and e.data.get("refund_owed_fen"):
                owed[order_id] = int(e.data["refund_owed_fen"])
            elif e.type == EventType.PAYMENT_REFUNDED.value:
                refunded[order_id].append(e)
        told = Counter(str(s.order_id) for s in self.db.sms if s.purpose == REFUND_PAID)
        for order_id, texts in told.items():
            refunds = len({e.id for e in refunded.get(order_id, [])})
            if order_id in self.placed and texts > refunds:
                self.fail(
                    "refund_told_once",
                    order_id,
                    f"{texts} {REFUND_PAID} texts, {refunds} payment.refunded",
                )
        for order_id, said in refunded.items():
            ids = sorted({e.id for e in said})
            if len(ids) > 1:
                self.fail("one_refund", order_id, f"{len(ids)} payment.refunded: {ids}")
            terminal = self.terminal.get(order_id)
            ended = terminal.type if terminal is not None else "not ended"
            paid = said[0].data.get("amount_fen")
            undone = ended == EventType.ORDER_CANCELLED.value or (
                ended == EventType.ORDER_CONFIRMED.value and order_id in self.db.voided_after_sale
            )
            if not undone or owed.get(order_id) != paid:
                self.fail(
                    "refund_was_owed",
                    order_id,
                    f"payment.refunded of {paid} fen at {_where(said[0].record)}; the order"
                    f" {ended}, owed back {owed.get(order_id)} fen by its payment.voided",
                )

    def cancelled_holds_nothing(self) -> None:
        loans = defaultdict(list)
        for loan in self.db.loans:
            loans[loan.order_id].append(loan)
        for order_id, terminal in self.terminal.items():
            if terminal.type != EventType.ORDER_CANCELLED.value:
                continue
            hold = self.db.holds.get(order_id)
            if hold in HOLDING_STOCK:
                self.fail("cancelled_holds_no_stock", order_id, f"its hold is {hold!r}")
            active = [loan.loan_id for loan in loans[order_id] if loan.status != "voided"]
            if active:
                self.fail("cancelled_holds_no_loan", order_id, f"loans not voided: {active}")
            payment = self.db.payments.get(order_id)
            if payment in HOLDING_PAYMENT:
                self.fail("cancelled_holds_no_charge", order_id, f"payment is {payment!r}")

    def texts(self) -> None:
        """The texts of the orders in scope (``notifications.sms``, with the ``sms.sent`` and
        ``sms.failed`` events): the buyer told once, of the outcome, at the phone of
        ``order.placed``; each seller of a confirmed order told once; each instalment's
        reminder of a stage sent once; every text sent (or its failure reported, or its
        recipient opted out); no text sent twice."""
        mine = [s for s in self.db.sms if s.order_id in self.placed]
        by_order: dict[str, list[Sms]] = defaultdict(list)
        for s in mine:
            by_order[str(s.order_id)].append(s)
        self._sent_once()
        self._texts_sent(mine)
        for order_id, placed in self.placed.items():
            texts = by_order[order_id]
            buyer = placed.data.get("buyer") or {}
            phone = buyer.get("phone")
            for s in texts:
                if phone is not None and s.purpose != SELLER_SMS_PURPOSE and s.to != phone:
                    self.fail(
                        "sms_to_the_buyer",
                        s.sms_id,
                        f"{s.purpose} of order {order_id} to {s.to}, its buyer's phone {phone}",
                    )
            terminal = self.terminal.get(order_id)
            if terminal is not None and phone is not None:
                self._buyer_told(order_id, terminal, texts)
            self._sellers_told(order_id, terminal, texts)
            self._reminded_once(order_id, texts)

    def _buyer_told(self, order_id: str, terminal: _Event, texts: list[Sms]) -> None:
        """Exactly one outcome text, and it tells the outcome the terminal event is."""
        told = [s for s in texts if s.purpose in BUYER_SMS_PURPOSES]
        if len(told) != 1:
            self.fail(
                "buyer_told_once",
                order_id,
                f"{len(told)} SMS to the buyer for its outcome: {[s.purpose for s in told]}",
            )
        expected = OUTCOME_SMS[terminal.type]
        wrong = [s.sms_id for s in told if s.purpose != expected]
        if wrong:
            self.fail(
                "buyer_told_the_outcome",
                order_id,
                f"{terminal.type} at {_where(terminal.record)}, but told {wrong}"
                f" {[s.purpose for s in told if s.purpose != expected]}, not {expected}",
            )

    def _sellers_told(self, order_id: str, terminal: _Event | None, texts: list[Sms]) -> None:
        """One new_order text per seller of a confirmed order (sellers sharing a phone get one
        each: a text does not name its seller, so each phone gets as many as the order has
        sellers on it), and none for an order not confirmed."""
        sent = Counter(s.to for s in texts if s.purpose == SELLER_SMS_PURPOSE)
        expected: Counter[str] = Counter()
        if terminal is not None and terminal.type == EventType.ORDER_CONFIRMED.value:
            for seller in sorted(self.sellers[order_id]):
                phone = self.db.seller_phones.get(seller)
                if phone is not None:
                    expected[phone] += 1
        if sent != expected:
            ended = terminal.type if terminal is not None else "not ended"
            self.fail(
                "sellers_told_once",
                order_id,
                f"{ended}, sellers {sorted(self.sellers[order_id])}: {SELLER_SMS_PURPOSE} texts"
                f" per phone {dict(sent)}, sellers per phone {dict(expected)}",
            )

    def _reminded_once(self, order_id: str, texts: list[Sms]) -> None:
        """One reminder per (instalment, stage), the instalment as the text's dedup key
        names it (``instalment:<loan>:<number>:<due>|...``, the only place a text says
        which it is; one that does not say is flagged): several instalments, several
        reminders."""
        reminders: dict[tuple[str, str], list[str]] = defaultdict(list)
        for s in texts:
            if s.purpose not in REMINDER_PURPOSES:
                continue
            instalment = _instalment(s.dedup_key)
            if instalment is None:
                self.fail(
                    "reminded_once",
                    s.sms_id,
                    f"{s.purpose} of order {order_id}: its key {s.dedup_key!r} names no instalment",
                )
                continue
            reminders[instalment, s.purpose].append(s.sms_id)
        for (instalment, purpose), ids in reminders.items():
            if len(ids) > 1:
                self.fail(
                    "reminded_once",
                    f"{order_id}|{instalment}|{purpose}",
                    f"{len(ids)} SMS: {sorted(ids)}",
                )

    def _texts_sent(self, texts: list[Sms]) -> None:
        """Every text reached the gateway (``sent``/``delivered``, or an ``sms.sent``), or
        was refused with ``sms.failed`` saying so (an invalid number, the gateway's refusal,
        the attempts spent, an undelivered receipt), or was ``suppressed``; never left
        ``pending`` or ``sending``, nor failed without a word."""
        sent, failed = set(), set()
        for e in self.events[Topic.NOTIFICATION_EVENTS.value]:
            if e.type == EventType.SMS_SENT.value:
                sent.add(str(e.data.get("sms_id")))
            elif e.type == EventType.SMS_FAILED.value:
                failed.add(str(e.data.get("sms_id")))
        for s in texts:
            if s.status in SENT_SMS or s.status == SUPPRESSED_SMS or s.sms_id in sent:
                continue
            if s.status == "failed" and s.sms_id in failed:
                continue
            self.fail(
                "sms_sent",
                s.sms_id,
                f"{s.purpose} of order {s.order_id} to {s.to} is {s.status!r}"
                + (" with no sms.failed" if s.status == "failed" else "")
                + (f" ({s.last_error})" if s.last_error else ""),
            )

    def _sent_once(self) -> None:
        """One ``sms.sent`` per text (a relay's republished event has the same id), and none
        for a text of an order in scope that the database does not hold."""
        known = {s.sms_id for s in self.db.sms}
        events: dict[str, set[str]] = defaultdict(set)
        for e in self.events[Topic.NOTIFICATION_EVENTS.value]:
            if e.type == EventType.SMS_SENT.value and e.data.get("order_id") in self.placed:
                events[str(e.data.get("sms_id"))].add(e.id)
        for sms_id, ids in events.items():
            if len(ids) > 1:
                self.fail("one_sms", sms_id, f"sent {len(ids)} times: sms.sent {sorted(ids)}")
            if sms_id not in known:
                self.fail("one_sms", sms_id, "sms.sent for a text notifications.sms never held")

    def dead_letters_are_the_poison(self) -> None:
        expected = {
            (i.topic, i.partition, i.offset, group)
            for i in self.h.injected
            for group in self.h.consumers.get(i.topic, ())
        }
        found: dict[tuple[str, int, int, str], KafkaRecord] = {}
        for record in self.dead_letters:
            headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers}
            try:
                coords = (
                    headers["dlq.topic"],
                    int(headers["dlq.partition"]),
                    int(headers["dlq.offset"]),
                    headers["dlq.group"],
                )
            except (KeyError, ValueError):
                self.fail("dlq_headers", _where(record), f"headers {sorted(headers)}")
                continue
            since = self.h.dlq_since.get(coords[0], {}).get(coords[1], 0)
            if coords[2] < since:
                continue
            found.setdefault(coords, record)
        for coords in sorted(expected - found.keys()):
            self.fail("dlq_has_the_poison", "|".join(map(str, coords)), "never dead-lettered")
        for coords in sorted(found.keys() - expected):
            record = found[coords]
            headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers}
            self.fail(
                "dlq_only_the_poison",
                "|".join(map(str, coords)),
                f"dead-lettered at {_where(record)} but not injected:"
                f" {headers.get('dlq.error', '?')} {headers.get('dlq.error.message', '')[:200]}",
            )


def _instalment(dedup_key: str) -> str | None:
    """``<loan>:<number>`` of a reminder's dedup key (:func:`reminder_of`); None if it is
    not one."""
    named = reminder_of(dedup_key)
    return None if named is None else f"{named[0]}:{named[1]}"


def _where(record: KafkaRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"

"""The payments schema: credit lines, payments per order, loans and their instalments,
repayments, sellers' payables, reminders sent, and the double-entry ledger."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.messaging.tables import add_messaging_tables
from shared.status_gauge import in_statuses

SCHEMA = "payments"
metadata = MetaData(schema=SCHEMA)

credit_lines = Table(
    "credit_lines",
    metadata,
    Column("buyer_id", String(64), primary_key=True),
    Column(
        "credit_limit_fen", BigInteger, CheckConstraint("credit_limit_fen >= 0"), nullable=False
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

payments = Table(
    "payments",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("buyer_id", String(64), nullable=True),
    Column("method", String(16), nullable=True),
    Column("amount_fen", BigInteger, nullable=True),
    # pending | charging (prepaid: the gateway is being asked) | authorized | declined |
    # voiding (prepaid: the gateway is being told to void) | voided |
    # awaiting (a platform's prepaid order: until the adapter says the platform was paid) |
    # cancelled (cancelled before any payment was asked) |
    # void_refused (prepaid: the gateway refused the void for good; the buyer is owed a refund) |
    # refunded (a void_refused one, or a voided loan's repayments, refunded by hand, recorded)
    Column("status", String(16), nullable=False),
    Column("loan_id", String(36), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Prepaid through the gateway: calls made so far, when the next may be made (a lease
    # while one is in flight), and the gateway's charge id (opaque, as long as it is).
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("gateway_ref", Text, nullable=True),
    # Of those calls, the ones that never reached the gateway (its connection refused or not
    # made: ``GatewayUnreached``); as many as ``attempts``: the gateway has seen none of them.
    # And the hold's time its ``stock.reserved`` said: a charge the gateway has not seen is
    # not sent from then on (migration 0020; NULL before it, or for a reservation that said
    # no time: charged however late).
    Column("unreached", Integer, nullable=False, server_default="0"),
    Column("held_until", DateTime(timezone=True), nullable=True),
    # The last error its gateway calls met (a timeout, a refused connection, a 5xx, an answer
    # not the gateway's: each retried), kept once the gateway answers: which orders an
    # outage held up (migration 0018; NULL for those that met none, or before it).
    Column("last_error", Text, nullable=True),
    # A void the gateway refused for good (``void_refused``): the charge stands, and what the
    # buyer paid is owed back to them, by hand; the gateway's answer, as it gave it. A loan
    # voided (``voided``) says here too what its buyer had repaid, owed back (migration 0022;
    # NULL: nothing); once ``refunded``, it is what was paid back.
    Column("refund_owed_fen", BigInteger, nullable=True),
    Column("gateway_refusal", Text, nullable=True),
    # Its refund made by hand (``refunded``): the bank's or gateway's transfer reference
    # operations gave, why (NULL for those recorded before migration 0017), when they
    # recorded it, and the token's name (NULL before migration 0023: the audit trail's).
    Column("refund_reference", String(128), nullable=True),
    Column("refund_reason", String(256), nullable=True),
    Column("refunded_at", DateTime(timezone=True), nullable=True),
    Column("refunded_by", String(128), nullable=True),
    # Voided by an operator because the orders service never had the order (a forged
    # ``stock.reserved``, or a copy of a platform's order under another id: migration 0021):
    # when, the token's name and why (services.payments.voids).
    Column("unplaced_at", DateTime(timezone=True), nullable=True),
    Column("unplaced_by", String(128), nullable=True),
    Column("unplaced_reason", String(256), nullable=True),
    # Voided by an operator after its order's sale, the order confirmed (its buyer refunded
    # after delivery: a platform's refund, spoiled produce; migration 0024): when, the
    # token's name and why (services.payments.voids).
    Column("voided_after_sale_at", DateTime(timezone=True), nullable=True),
    Column("voided_after_sale_by", String(128), nullable=True),
    Column("voided_after_sale_reason", String(256), nullable=True),
    # W3C trace context of the event that asked for the charge, so that the gateway loop
    # continues the order's trace.
    Column("trace_headers", JSONB, nullable=True),
    # The id of the event that asked for the gateway call in flight (``stock.reserved`` for a
    # charge, ``order.cancelled`` for a void): the cause of the event its outcome emits.
    Column("caused_by", String(256), nullable=True),
    # A prepaid order a marketplace platform placed (source platform/<app>): the app, and
    # the order's ref. Authorised without the gateway once the adapter says the platform was
    # paid for it (``platform_paid``), ``awaiting`` until then; cancelled, its record
    # is reversed and the platform refunds its buyer.
    Column("collected_by", String(64), nullable=True),
    Column("order_ref", String(64), nullable=True),
    # The gateway loop's claim looks for due calls every half second and after each commit
    # that queues one: without this index it reads every payment ever made.
    Index(
        "payments_gateway_due",
        "next_attempt_at",
        postgresql_where=text("status IN ('charging', 'voiding')"),
    ),
    Index(
        "payments_awaiting_platform",
        "collected_by",
        "order_ref",
        postgresql_where=text("status = 'awaiting'"),
    ),
    # The payments whose buyer is owed a refund by hand, and those refunded so: a few among
    # every payment ever made. The gauge the alert watches counts the owed ones at every
    # sample, and operators list either, newest first, through it (migration 0016). Only
    # rows in these statuses are in it: a status change costs it nothing otherwise.
    Index(
        "payments_refunds_by_hand",
        "status",
        "updated_at",
        "order_id",
        postgresql_where=text("status IN ('void_refused', 'refunded')"),
    ),
    # The loans voided whose buyer is owed back what they repaid, by hand: counted at every
    # sample for the alert, as those void_refused are (migration 0022).
    Index(
        "payments_loans_owed_back",
        "order_id",
        postgresql_where=text("status = 'voided' AND refund_owed_fen IS NOT NULL"),
    ),
    # An operator's list of the payments of any other status, newest first (``caravan
    # payments list --status authorized``): those statuses are most of the table, read whole
    # and sorted for a page without it (migration 0019). Those in flight and awaiting a
    # platform are few, read through their own indexes above.
    Index(
        "payments_status_changed",
        "status",
        "updated_at",
        "order_id",
        postgresql_where=text(
            "status IN ('pending', 'authorized', 'declined', 'voided', 'cancelled')"
        ),
    ),
)

platform_paid = Table(
    "platform_paid",
    metadata,
    # The orders a marketplace platform was paid for, as the platform adapter said
    # (``platform.order_paid``): (app, order_ref).
    Column("app", String(64), primary_key=True),
    Column("order_ref", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

loans = Table(
    "loans",
    metadata,
    Column("loan_id", String(36), primary_key=True),
    Column("order_id", String(36), nullable=False, unique=True),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("principal_fen", BigInteger, CheckConstraint("principal_fen > 0"), nullable=False),
    Column("outstanding_fen", BigInteger, CheckConstraint("outstanding_fen >= 0"), nullable=False),
    Column("term_months", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # active | voided | repaid
    Column("interest_fen", BigInteger, nullable=False, server_default="0"),
    Column("monthly_rate_bp", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Every microloan decision sums what the buyer's active loans still owe: through this
    # index it reads those loans alone, from the index, however many the buyer has repaid.
    Index(
        "loans_active_by_buyer",
        "buyer_id",
        postgresql_include=["outstanding_fen"],
        postgresql_where=text("status = 'active'"),
    ),
    # The loan book, newest first (``GET /loans``): a page through it, not every loan of the
    # season read and sorted (migration 0025).
    Index("loans_created", "created_at", "loan_id"),
)

LOAN_ACTIVE = in_statuses(loans.c.status, ["active"])
"""A loan that counts against its buyer's credit line. The status is written into the SQL,
not bound: a prepared statement's generic plan can use ``loans_active_by_buyer`` only so."""

instalments = Table(
    "instalments",
    metadata,
    Column("loan_id", String(36), ForeignKey("payments.loans.loan_id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("due", Date, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("interest_fen", BigInteger, nullable=False, server_default="0"),
    Column("paid_fen", BigInteger, nullable=False, server_default="0"),
    # No reminder of it is to be announced any more, though it may be unpaid: its loan was
    # voided, or it was announced overdue (the last stage). The sweep reads it, and the
    # loan book's overdue loans (LEFT_UNPAID).
    Column("reminders_done", Boolean, nullable=False, server_default=text("false")),
    # Its loan was voided (``void_loan``, in the void's transaction; migration 0029 marked
    # those voided before): nothing of it is owed any more, paid or not. The loan book's
    # overdue loans read the unpaid ones left without it (LEFT_UNPAID), as the sweep reads
    # TO_REMIND, which ``reminders_done`` already keeps them out of.
    Column("voided", Boolean, nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("loan_id", "number"),
    CheckConstraint("paid_fen >= 0 AND paid_fen <= amount_fen", name="instalment_paid_range"),
)

UNPAID = instalments.c.paid_fen < instalments.c.amount_fen
TO_REMIND = and_(UNPAID, ~instalments.c.reminders_done)
"""The instalments the reminder sweep may still announce: unpaid, of a loan not voided, not
announced overdue yet."""

# The reminder sweep (every few seconds) reads through it, by due date. Those of voided loans
# and those announced overdue and left unpaid are not in it: they only grow over a season,
# and every sweep read them all (migration 0012). Then by loan, for the loan book's overdue
# loans, walked by day and loan through it and instalments_left_unpaid (0028).
Index(
    "instalments_to_remind",
    instalments.c.due,
    instalments.c.loan_id,
    postgresql_where=TO_REMIND,
)

LEFT_UNPAID = and_(UNPAID, instalments.c.reminders_done, ~instalments.c.voided)
"""The unpaid instalments no reminder is announced of any more that are still owed: announced
overdue (the last stage) and left unpaid, their loan not voided. With those of ``TO_REMIND``
past their day, the loan book's overdue loans (``GET /loans?overdue=true``) are read from
them."""

# An index of its own, which the sweep cannot read (its predicate excludes the sweep's): the
# loan book's overdue page walked every loan, newest first, to the oldest overdue one (0027).
# Those of voided loans are not in it (0029): the page read each one past its day, every
# cancelled microloan order's of the season, to find its loan voided and leave it.
Index(
    "instalments_left_unpaid",
    instalments.c.due,
    instalments.c.loan_id,
    postgresql_where=LEFT_UNPAID,
)

repayments = Table(
    "repayments",
    metadata,
    Column("loan_id", String(36), ForeignKey("payments.loans.loan_id"), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("requested_fen", BigInteger, nullable=True),  # None: "repay in full"
    Column("amount_fen", BigInteger, CheckConstraint("amount_fen > 0"), nullable=False),
    Column("principal_fen", BigInteger, nullable=False),
    Column("interest_fen", BigInteger, nullable=False),
    # [{number, amount_fen, interest_fen, principal_fen}]: what a retry of the key answers
    Column("allocations", JSONB, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("loan_id", "idempotency_key"),
    # The repayments of a period, newest first, and their totals (``GET /repayments``): the
    # period's alone through it (migration 0025).
    Index("repayments_created", "created_at", "loan_id", "idempotency_key"),
)

credit_adjustments = Table(
    "credit_adjustments",
    metadata,
    Column("buyer_id", String(64), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("delta_fen", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("buyer_id", "idempotency_key"),
)

payables = Table(
    "payables",
    metadata,
    Column("order_id", String(36), nullable=False),
    Column("seller_id", String(64), nullable=False),
    Column("amount_fen", BigInteger, CheckConstraint("amount_fen >= 0"), nullable=False),
    Column("status", String(16), nullable=False),  # pending | owed | cancelled
    PrimaryKeyConstraint("order_id", "seller_id"),
)

instalment_reminders = Table(
    "instalment_reminders",
    metadata,
    Column("loan_id", String(36), nullable=False),
    Column("number", Integer, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("loan_id", "number", "stage"),
)

SELLERS_CREDITED = "amount_fen < 0 AND starts_with(account, 'seller_payable:')"
# Each money movement is a ledger transaction (``txn_id``, named after what it records, so
# posting it twice violates the unique key); its entries sum to zero, which a deferred
# constraint trigger checks at commit (see migration 0002).
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("txn_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("account", String(96), nullable=False),
    Column("amount_fen", BigInteger, CheckConstraint("amount_fen <> 0"), nullable=False),
    Column("order_id", String(36), nullable=True, index=True),
    Column("loan_id", String(36), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("txn_id", "account"),
    # The sellers' credits, by time and by seller: a period's payables, every seller's or
    # one's (``payables.py``; migration 0026).
    Index(
        "ledger_seller_credits",
        "created_at",
        "account",
        "order_id",
        postgresql_where=text(SELLERS_CREDITED),
    ),
    Index(
        "ledger_credits_of_seller",
        "account",
        "created_at",
        "order_id",
        postgresql_where=text(SELLERS_CREDITED),
    ),
)

outbox, inbox = add_messaging_tables(metadata)

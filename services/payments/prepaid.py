"""Prepaid payments through the gateway, without ever holding a transaction open during a
call, and without ever charging twice.

Each step is its own short transaction; the gateway call happens between two of them:

1. ``stock.reserved`` (:mod:`services.payments.handlers`) records the payment as
   ``charging`` with ``next_attempt_at = now``, in the handler's transaction (with the
   sellers' payables, ``pending``). The idempotency key is the order id.
2. The gateway loop *claims* due rows (``charging`` or ``voiding`` whose ``next_attempt_at``
   has come) with ``FOR UPDATE SKIP LOCKED``, moves ``next_attempt_at`` a lease ahead,
   counts the attempt and commits. Other instances skip the row while the call is in flight.
3. With no transaction open, it calls the gateway: ``charge(order_id, ...)`` or
   ``void(order_id)``.
4. It records the outcome in a new transaction, guarded by the state it claimed
   (``WHERE status = 'charging'``): approved → ``authorized``, the charge posted to the
   ledger, the payables ``owed``, ``payment.authorized``; declined (or the charge refused
   with a 4xx) → ``declined``, ``payment.declined`` (``payment_failed``). No answer, or
   none to be sure of (timeout, refused connection, 5xx, 429, an answer that is not the
   gateway's JSON: :mod:`.adapters.gateway_http`) → the row keeps its status, the error
   is kept (``last_error``, left once the gateway answers: which orders an outage held up)
   and ``next_attempt_at`` moves a backoff ahead: the call is retried with the same key.
   A call whose connection was refused or not made (:class:`GatewayUnreached`) is counted
   (``unreached``): the gateway has not seen it. A payment so for over
   :data:`GATEWAY_STUCK_SECONDS` is said as such and alerted on. A void the gateway answers
   "no such charge" (:class:`NoSuchCharge`) is ``voided`` if it never approved the charge:
   nothing to void (:func:`record_no_such_charge`); made again if it did, until an operator
   says the gateway lost it (:func:`mark_lost`): then refused for good, as below.

A charge whose hold lapsed (the ``held_until`` of its ``stock.reserved``, by the database's
clock, the one ``next_attempt_at`` is due by) and whose every call so far was unreached is
not made: the gateway has seen none, so nothing can be standing under its key. It is
``declined``, ``payment.declined`` (``expired``), as a reservation read after its hold lapsed
is (:func:`~services.payments.handlers.declined_lapsed`), at the lapse: such a charge's retry is
due by then at the latest (:func:`retry_later`); only while its claim's lease stands (another
instance's claim since counts this one's call as one the gateway may have seen, and makes it).
One the gateway may have seen (a timeout, a 5xx, a crash or a stop mid call) is made again, as
above, and voided once the order ends: abandoned, a charge the gateway took under its key would
stand with no payment to void it. A void is always made.

A crash between any two steps leaves the row ``charging`` (or ``voiding``); once its lease
runs out any instance claims it again and repeats the call with the same key, which the
gateway answers with the first outcome: the recovery loop *is* the gateway loop. A
graceful stop (SIGTERM: a deploy, a scale-down) does not wait for the lease: a call it
interrupts is handed back (:func:`hand_back`), due again at once, and any instance makes it
again with the same key. An
order cancelled meanwhile (``order.cancelled`` turns ``charging`` or a prepaid
``authorized`` into ``voiding``) is voided at the gateway by key, which also refuses a
charge still in flight; then it is ``voided``, and the charge, if it was posted, reversed.
An outcome arriving after that finds the row no longer ``charging`` and changes nothing.
A void the gateway refuses for good (:class:`VoidRefused`: a charge settled already) is not
asked again: the payment is ``void_refused``, the charge standing, what the buyer paid owed
back to them (``refund_owed_fen``, ``buyer_refund_payable`` in the ledger; said on
``payment.voided``, as a loan voided after repayments is), the gateway's answer kept
(``gateway_refusal``), counted (``caravan_payments_void_refused_total``) and
alerted on, for operations to refund by hand; once they have, they record it
(:func:`record_refund`: ``POST /orders/{id}/payment/refund``): the payment is ``refunded``,
with the transfer's reference, and the ledger owes the buyer nothing more.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, ClassVar

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    ARRAY,
    DateTime,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    case,
    column,
    func,
    literal,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeEngine

from services.payments.adapters import ledger as ledger_store
from services.payments.adapters.gateway import (
    ChargeResult,
    GatewayUnavailable,
    GatewayUnreached,
    NoSuchCharge,
    PaymentGateway,
    VoidRefused,
)
from services.payments.adapters.tables import payments
from services.payments.domain import ledger
from services.payments.domain.hold import hold_lapsed
from services.payments.domain.status import STATUSES
from services.payments.handlers import (
    GATEWAY_WORK,
    charge_reversed,
    charge_txn,
    declined_lapsed,
    lock_payments,
    post_charge,
    set_payables_of,
    void_txn,
)
from shared.backoff import exponential_step
from shared.db import log_retry, reason
from shared.events.payments import PaymentDeclined, PaymentRefunded, PaymentVoided
from shared.logs import answers_again, retried, working_for
from shared.loops import handing_back
from shared.messaging.uow import Tx, UnitOfWork
from shared.metrics import owned_by
from shared.pagination import Position, newest_first, page
from shared.status_gauge import StatusGauge, in_statuses

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    """A claimed gateway call: charge (``charging``) or void (``voiding``) an order."""

    order_id: str
    status: str
    buyer_id: str
    amount_fen: int
    attempts: int
    trace_headers: dict[str, str] | None = None
    caused_by: str | None = None  # the event that asked for the call: its outcome's cause
    held_until: datetime | None = None  # the hold's time its stock.reserved said
    lapsed: bool = False  # the hold had lapsed at the claim, by the database's clock
    seen: bool = True  # an earlier call may have reached the gateway (not all unreached)
    waited: float = 0.0  # seconds since the payment became charging or voiding, at the claim
    leased_until: datetime | None = None  # the claim's lease (next_attempt_at), its fence

    @property
    def unsent(self) -> bool:
        """A charge not to make: its hold lapsed, and the gateway has seen none of its calls
        (each earlier one unreached: :class:`GatewayUnreached`). One it may have seen is made
        again with the same key, answered with its first outcome, and voided once the order
        ends: abandoned, a charge it took would stand with no payment to void it."""
        return self.status == "charging" and self.lapsed and not self.seen


IN_FLIGHT = ("charging", "voiding")
"""The statuses of a payment whose gateway call is due or in flight (``payments_gateway_due``)."""


def due_calls(limit: int) -> Select[tuple[str]]:
    """The payments whose gateway call is due (the index ``payments_gateway_due`` finds them)."""
    return (
        select(payments.c.order_id)
        .where(
            payments.c.status.in_(IN_FLIGHT),
            payments.c.next_attempt_at <= func.now(),
        )
        .order_by(payments.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


async def claim_due(tx: Tx, lease_seconds: float, limit: int = 20) -> list[Work]:
    rows = await tx.conn.execute(
        update(payments)
        .where(payments.c.order_id.in_(due_calls(limit).scalar_subquery()))
        .values(
            next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
            attempts=payments.c.attempts + 1,
        )
        .returning(
            payments.c.order_id,
            payments.c.status,
            payments.c.buyer_id,
            payments.c.amount_fen,
            payments.c.attempts,
            payments.c.trace_headers,
            payments.c.caused_by,
            payments.c.held_until,
            payments.c.unreached,
            payments.c.updated_at,  # when it became charging or voiding
            payments.c.next_attempt_at,  # the lease
            func.now().label("now"),  # the clock next_attempt_at is compared by
        )
    )
    return [
        Work(
            r.order_id,
            r.status,
            r.buyer_id or "",
            r.amount_fen or 0,
            r.attempts,
            r.trace_headers,
            r.caused_by,
            r.held_until,
            lapsed=hold_lapsed(r.held_until, r.now),
            seen=r.attempts - 1 > r.unreached,  # this claim's call not made yet
            waited=(r.now - r.updated_at).total_seconds(),
            leased_until=r.next_attempt_at,
        )
        for r in rows
    ]


Answer = ChargeResult | GatewayUnavailable | VoidRefused | None
"""What a claimed call met: a charge's result; None, a void made (or a charge not made:
:attr:`Work.unsent`); or the gateway's error (no answer to be sure of, or a void refused)."""
_ANSWERED = (GatewayUnavailable, VoidRefused)


@dataclass(frozen=True)
class End:
    """How a claimed call ends its payment: made ``status``, its call no longer due, with
    ``values`` (columns of the payment) and ``unreached`` more calls that never reached the
    gateway; ``result``: the charge's answer, ``refusal``: the void's; ``leased``: made only
    on this lease (a charge not made: not the gateway's answer, which a claim made again since
    would meet too, but ours, which its call may belie)."""

    work: Work
    status: str
    values: dict[str, object] = field(default_factory=dict)
    unreached: int = 0
    leased: datetime | None = None
    result: ChargeResult | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class Ended:
    """An :class:`End` made, with what :func:`_finish` read for it: the sellers' payables
    (seller → fen) and the charge's ledger entries (voided or refused: posted, if any)."""

    end: End
    owed: dict[str, int]
    charged: list[ledger.Entry]


def _end(work: Work, answer: Answer) -> End | None:
    """How ``work``'s call, having met ``answer``, ends its payment; None: it does not end it
    here (no answer to be sure of, or "no such charge": :func:`_record`)."""
    if work.unsent:  # this claim's call not made: unreached too
        return End(work, "declined", unreached=1, leased=work.leased_until)
    if isinstance(answer, ChargeResult):
        status = "authorized" if answer.status == "approved" else "declined"
        return End(work, status, {"gateway_ref": answer.charge_id}, result=answer)
    if isinstance(answer, VoidRefused):
        return _refused(work, str(answer))
    if answer is None:
        return End(work, "voided", {"gateway_refusal": None})  # lost, said: not so
    return None


def _refused(work: Work, refusal: str) -> End:
    refused = {"refund_owed_fen": work.amount_fen, "gateway_refusal": refusal}
    return End(work, "void_refused", refused, refusal=refusal)


@cache
def _ending(columns: tuple[str, ...]) -> Update:
    """The statement that makes ends setting ``columns`` (:func:`_ended`): one row each in
    arrays, its order id, the status claimed, the one it ends as, its unreached calls, the
    lease it is made on (NULL: any) and ``columns``."""
    given: dict[str, TypeEngine[Any]] = {
        "order_id": String(),
        "claimed": String(),
        "status": String(),
        "unreached": Integer(),
        "leased": DateTime(timezone=True),
        **{c: payments.c[c].type for c in columns},
    }
    rows = (
        func.unnest(*(bindparam(f"{c}_given", type_=ARRAY(t)) for c, t in given.items()))
        .table_valued(*(column(c, t) for c, t in given.items()))
        .render_derived(name="given")
    )
    return (
        update(payments)
        .where(
            payments.c.order_id == rows.c.order_id,
            payments.c.status == rows.c.claimed,
            or_(rows.c.leased.is_(None), payments.c.next_attempt_at == rows.c.leased),
        )
        .values(
            status=rows.c.status,
            next_attempt_at=null(),
            updated_at=func.now(),
            unreached=payments.c.unreached + rows.c.unreached,
            **{c: rows.c[c] for c in columns},
        )
        .returning(payments.c.order_id)
    )


async def _ended(tx: Tx, ends: Sequence[End]) -> set[str]:
    """Each of ``ends`` made if its payment is still what its call was claimed as, in one
    statement for each set of columns they set (one for a claim's charges); the order ids of
    those made. One not made has moved on (a cancellation came first, the outcome was
    recorded already, or a charge not made was claimed again since)."""
    by_columns: dict[tuple[str, ...], list[End]] = {}
    for end in ends:
        by_columns.setdefault(tuple(sorted(end.values)), []).append(end)
    made: set[str] = set()
    for columns, group in by_columns.items():
        given: dict[str, list[Any]] = {
            "order_id": [e.work.order_id for e in group],
            "claimed": [e.work.status for e in group],
            "status": [e.status for e in group],
            "unreached": [e.unreached for e in group],
            "leased": [e.leased for e in group],
            **{c: [e.values[c] for e in group] for c in columns},
        }
        values = {f"{c}_given": v for c, v in given.items()}  # a column's own name is SET's
        made.update(r.order_id for r in await tx.conn.execute(_ending(columns), values))
    return made


async def _finish(tx: Tx, ends: Sequence[End]) -> list[Ended]:
    """Make ``ends`` (:func:`_ended`), then set their payables (owed if authorized, else
    cancelled) and read the charges of those voided or refused, a statement each for them all;
    those made, with what was read for them. What each says is :func:`_said`."""
    made = await _ended(tx, ends)
    done = [e for e in ends if e.work.order_id in made]
    payables = await set_payables_of(
        tx, {e.work.order_id: "owed" if e.status == "authorized" else "cancelled" for e in done}
    )
    undone = [charge_txn(e.work.order_id) for e in done if e.status in ("voided", "void_refused")]
    charged = await ledger_store.entries_of_all(tx.conn, undone)
    return [
        Ended(e, payables[e.work.order_id], charged.get(charge_txn(e.work.order_id), []))
        for e in done
    ]


async def _said(tx: Tx, ended: Ended) -> None:
    """What a payment :func:`_finish` made says: its ledger entries, event, log lines and
    counts."""
    end, work = ended.end, ended.end.work
    if end.status == "authorized":
        charged = ledger.prepaid_charged(ended.owed)
        await post_charge(
            tx,
            work.order_id,
            work.buyer_id,
            work.amount_fen,
            "prepaid_charged",
            charged,
            work.caused_by,
        )
    elif end.status == "declined" and end.result is None:  # not made: its hold lapsed
        before = "before the gateway had seen its charge"
        await declined_lapsed(tx, work.order_id, "prepaid", work.held_until, before, work.caused_by)
    elif end.status == "declined":
        reason = end.result.reason if end.result else None
        log.info("gateway declined the charge of order %s: %s", work.order_id, reason)
        await tx.emit(
            PaymentDeclined(order_id=work.order_id, reason="payment_failed"),
            causation_id=work.caused_by,
        )
    elif end.status == "voided":
        await charge_reversed(tx, work.order_id, work.amount_fen, ended.charged, work.caused_by)
    else:
        await _void_refused(tx, work, end.refusal or "", ended.charged)


async def record_voided(tx: Tx, work: Work) -> bool:
    """The gateway voided the order's key: reverse the charge if it was posted; False: no
    longer ``voiding``."""
    return await _record_end(tx, End(work, "voided", {"gateway_refusal": None}))


async def _record_end(tx: Tx, end: End) -> bool:
    """One call's :class:`End` made and said; False: its payment has moved on."""
    for ended in await _finish(tx, [end]):
        await _said(tx, ended)
        return True
    return False


async def record_no_such_charge(tx: Tx, work: Work, answer: str) -> str | None:
    """The gateway knows no charge under ``work``'s key (:class:`NoSuchCharge`: a void's 404).
    If it never approved one (the charge never reached it, or was never answered: none posted),
    there is nothing to void: the payment is ``voided`` as by a void (:func:`record_voided`).
    None: it approved one, so the void went where that charge is not (our configuration: a
    base URL changed since), to be made again; unless an operator said the gateway lost it
    (:func:`mark_lost`): then the void is refused for good (:func:`record_void_refused`), the
    charge owed back by hand. The status it ended as ("": no longer ``voiding``)."""
    if await ledger_store.entries_of(tx.conn, charge_txn(work.order_id)):
        lost = select(payments.c.gateway_refusal).where(
            payments.c.order_id == work.order_id, payments.c.status == work.status
        )
        said = await tx.conn.scalar(lost)
        if said is None:
            return None
        refused = await record_void_refused(tx, work, f"{answer} ({said})")
        return "void_refused" if refused else ""
    said = "the gateway knows no charge of voided order %s (%s): nothing to void"
    log.info(said, work.order_id, answer)
    return "voided" if await record_voided(tx, work) else ""


async def record_void_refused(tx: Tx, work: Work, refusal: str) -> bool:
    """The gateway refused for good to void the order's key: the charge stands, and what the
    buyer paid is owed back to them (the sellers' payables cancelled: the order is), said as
    ``payment.voided`` with ``refund_owed_fen`` (:func:`_void_refused`)."""
    return await _record_end(tx, _refused(work, refusal))


async def _void_refused(tx: Tx, work: Work, refusal: str, charged: list[ledger.Entry]) -> None:
    ledger_store.post(
        tx,
        void_txn(work.order_id),
        "prepaid_void_refused",
        ledger.prepaid_void_refused(charged, work.amount_fen),
        order_id=work.order_id,
    )
    # Said as a loan voided with repayments is: the order's payment undone in our books, what
    # the buyer paid owed back (the order's timeline ends on it, not on the authorisation).
    voided = PaymentVoided(
        order_id=work.order_id, amount_fen=work.amount_fen, refund_owed_fen=work.amount_fen
    )
    await tx.emit(voided, causation_id=work.caused_by)
    # An operator's task with a runbook (a refund by hand), not a bug: a warning, as a dead
    # letter is, the alert CaravanPaymentVoidRefused firing meanwhile.
    log.warning(
        "gateway refused for good to void the charge of voided order %s (%s): %d fen owed"
        " back to the buyer, to refund by hand",
        work.order_id,
        refusal,
        work.amount_fen,
    )
    tx.after_commit(VOID_REFUSED.inc)


SHOWN = (
    payments.c.order_id,
    payments.c.status,
    payments.c.method,
    payments.c.amount_fen,
    payments.c.loan_id,
    payments.c.attempts,
    payments.c.last_error,  # the last its gateway calls met, kept once answered
    payments.c.unreached,  # ... those of its calls that never reached the gateway
    payments.c.held_until,  # the hold's time: a charge the gateway saw none of is not made
    payments.c.collected_by,  # the platform app that took the money
    payments.c.refund_owed_fen,  # void_refused, or a voided loan: owed back to the buyer
    payments.c.gateway_refusal,  # ... and the gateway's refusal
    payments.c.refund_reference,  # refunded: the transfer's reference (refund_owed_fen: paid)
    payments.c.refunded_at,  # ... when it was recorded
    payments.c.refunded_by,  # ... and by whom (the token's name)
    payments.c.unplaced_at,  # voided by an operator: the orders service never had the order
    payments.c.unplaced_by,  # ... the operator's token
    payments.c.unplaced_reason,  # ... and why
    payments.c.voided_after_sale_at,  # voided by an operator after the order's sale
    payments.c.voided_after_sale_by,  # ... the operator's token
    payments.c.voided_after_sale_reason,  # ... and why
)
"""What ``GET /orders/{id}/payment`` shows of a payment."""


async def payment_view(
    conn: AsyncConnection, order_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    """The payment of ``order_id`` as :data:`SHOWN` (None: there is none), locked if ``lock``."""
    query = select(*SHOWN).where(payments.c.order_id == order_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return None if row is None else dict(row._mapping)


LISTED = (*SHOWN, payments.c.buyer_id, payments.c.updated_at)
"""What ``GET /payments`` shows of each payment."""
LISTED_KEY = (payments.c.updated_at, payments.c.order_id)  # read newest first


def listed(
    status: str,
    start: Position | None,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Any]:
    """The statement of :func:`payments_of`: ``limit`` and one more payments, newest first,
    last changed at or after ``since`` and before ``until``. The status is written into the
    SQL, so that a partial index holding it serves: ``payments_refunds_by_hand``
    (``void_refused``, ``refunded``) and ``payments_status_changed`` (every other status but
    these) read a page in order from the index, from ``until`` down to ``since``;
    ``payments_gateway_due`` (:data:`IN_FLIGHT`) and ``payments_awaiting_platform`` read the
    few rows of their status, sorted."""
    where = [in_statuses(payments.c.status, [status])]
    if since is not None:
        where.append(payments.c.updated_at >= since)
    if until is not None:
        where.append(payments.c.updated_at < until)
    return newest_first(select(*LISTED).where(*where), LISTED_KEY, start, limit)


async def payments_of(
    conn: AsyncConnection,
    status: str,
    start: Position | None,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` payments of ``status`` as :data:`LISTED`, the last changed first (at or
    after ``since``, before ``until``), strictly after ``start``; and the cursor to continue
    from if there are more."""
    found = (await conn.execute(listed(status, start, limit, since, until))).all()
    rows, next_cursor = page(found, limit, lambda r: (r.updated_at, r.order_id))
    return [dict(r._mapping) for r in rows], next_cursor


class Refused(Exception):
    """An operator's write to a payment refused, nothing changed: ``title`` is the 409
    problem's title, ``str()`` its detail."""

    title: ClassVar[str]


class NotRefundable(Refused):
    """A refund recorded for a payment that owes its buyer nothing back by hand: neither
    ``void_refused`` nor a voided loan with repayments to give back (or refunded under another
    reference, or under this one for another reason)."""

    title = "Refund not recorded"


@dataclass(frozen=True)
class Change:
    """A payment before and after an operator's write (a refund recorded, a void of an order
    never placed): the same write again changes nothing."""

    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def applied(self) -> bool:
        """False: the same write again, nothing changed."""
        return self.before != self.after


def refund_txn(order_id: str) -> str:
    return f"refund:{order_id}"


async def _owed_back(conn: AsyncConnection, payment: dict[str, Any]) -> int | None:
    """What ``payment``'s buyer is owed back by hand: a ``void_refused`` charge's amount, or
    what they repaid on its loan since voided (``buyer_refund_payable``, a liability:
    credited); None: nothing is."""
    if payment["status"] == "void_refused":
        return int(payment["refund_owed_fen"] or 0)
    if payment["status"] == "voided" and payment["loan_id"] is not None:
        loan_id = payment["loan_id"]
        owed = -await ledger_store.balance_of_loan(conn, loan_id, ledger.BUYER_REFUND_PAYABLE)
        return owed if owed > 0 else None
    return None


async def record_refund(
    tx: Tx, order_id: str, reference: str, reason: str, recorded_by: str
) -> Change | None:
    """Operations refunded by hand the buyer of a ``void_refused`` payment, or of a voided
    loan what they had repaid on it (the transfer's ``reference``, and why; ``recorded_by``:
    the operator's token): it is ``refunded`` (``refund_owed_fen``: what was paid back), the
    ledger pays what was owed, out of what the gateway took or out of the repayments, and it
    is said (``payment.refunded``). The same reference and reason again change nothing and
    say nothing (a refund recorded before migration 0017 kept no reason: any); None: no
    payment for the order; :class:`NotRefundable` for a payment that owes nothing back, or
    the same reference with another reason (another refund, or a mistake: not the one
    recorded)."""
    before = await payment_view(tx.conn, order_id, lock=True)
    if before is None:
        return None
    status = before["status"]
    if status == "refunded" and before["refund_reference"] == reference:
        given = select(payments.c.refund_reason).where(payments.c.order_id == order_id)
        recorded = await tx.conn.scalar(given)
        if recorded not in (None, reason):
            raise NotRefundable(
                f"the payment of order {order_id} was refunded under reference {reference!r}"
                f" for another reason: {recorded!r}"
            )
        return Change(before, before)
    owed = await _owed_back(tx.conn, before)
    if owed is None:
        was = f" under reference {before['refund_reference']!r}" if status == "refunded" else ""
        loan = " (its loan owing nothing back)" if status == "voided" and before["loan_id"] else ""
        sold = (
            " (a confirmed order's buyer refunded after the sale: void its payment first,"
            " `caravan payments void-sold`)"
            if status == "authorized"
            else ""
        )
        raise NotRefundable(
            f"the payment of order {order_id} is {status}{was}{loan}: only a void_refused one,"
            f" or a voided loan's repayments owed back, is refunded by hand{sold}"
        )
    await tx.conn.execute(
        update(payments)
        .where(payments.c.order_id == order_id)
        .values(
            status="refunded",
            refund_owed_fen=owed,
            refund_reference=reference,
            refund_reason=reason,
            refunded_at=func.now(),
            refunded_by=recorded_by[:128],
            updated_at=func.now(),
        )
    )
    loan_id = before["loan_id"]
    kind, entries = (
        ("loan_refunded", ledger.loan_refunded(owed))
        if status == "voided"
        else ("prepaid_refunded", ledger.prepaid_refunded(owed))
    )
    ledger_store.post(tx, refund_txn(order_id), kind, entries, order_id=order_id, loan_id=loan_id)
    refunded = PaymentRefunded(
        order_id=order_id,
        loan_id=loan_id,
        amount_fen=owed,
        reference=reference,
        reason=reason,
        recorded_by=recorded_by,
        unplaced=before["unplaced_at"] is not None or None,
    )
    await tx.emit(refunded)
    after = await payment_view(tx.conn, order_id)
    assert after is not None  # locked above
    return Change(before, after)


class NotLost(Refused):
    """A payment an operator said the gateway lost the charge of, that is not a charge being
    voided (``voiding``, its charge posted)."""

    title = "Charge not said lost"


async def mark_lost(tx: Tx, order_id: str, said: str) -> Change | None:
    """An operator says the gateway lost the charge of ``order_id``, whose void it answers
    "no such charge" though it approved it (:func:`record_no_such_charge`): kept as ``said``
    (in ``gateway_refusal``), and the void made again now; at its next such answer, it is
    refused for good (``void_refused``, owed back by hand), and at a void the gateway makes
    after all, ``voided`` as any. The payment changes on a call's answer alone: one in flight
    now ends as the gateway answers it. Said before: answered as it is. None: no payment;
    :class:`NotLost`: not a charge being voided."""
    before = await payment_view(tx.conn, order_id, lock=True)
    if before is None:
        return None
    charged = await ledger_store.entries_of(tx.conn, charge_txn(order_id))
    if before["status"] != "voiding" or not charged:
        raise NotLost(
            f"the payment of order {order_id} is {before['status']}"
            f"{'' if charged else ', no charge posted'}: only a charge being voided (voiding)"
            " can be said lost by the gateway"
        )
    if before["gateway_refusal"] is not None:
        return Change(before, before)
    await tx.conn.execute(
        update(payments)
        .where(payments.c.order_id == order_id)
        .values(gateway_refusal=said, next_attempt_at=func.now())
    )
    tx.signal(GATEWAY_WORK)
    after = await payment_view(tx.conn, order_id)
    assert after is not None  # locked above
    return Change(before, after)


async def retry_later(tx: Tx, work: Work, delay_seconds: float, error: GatewayUnavailable) -> None:
    """The call met ``error`` (no answer to be sure of): kept, counted if it never reached
    the gateway, and asked again in a while; a charge the gateway has still seen none of the
    calls of (this one unreached too) by its hold's lapse at the latest, when it is not made
    but declined (:attr:`Work.unsent`): on time, not up to a backoff (30 s) after it. Only
    while the payment is still on its claim's lease: recorded already (a batch committed
    whose answer was lost, recorded again one at a time), it would count the call unreached
    twice, and a charge the gateway may have taken read as one it saw none of (declined at
    its hold's lapse, never voided); claimed again since, the newer claim keeps its lease."""
    missed = isinstance(error, GatewayUnreached)
    next_attempt_at = func.now() + timedelta(seconds=delay_seconds)
    if work.status == "charging" and missed and not work.seen and work.held_until is not None:
        next_attempt_at = func.least(next_attempt_at, literal(work.held_until, DateTime(True)))
    mine = [payments.c.order_id == work.order_id, payments.c.status == work.status]
    if work.leased_until is not None:
        mine.append(payments.c.next_attempt_at == work.leased_until)
    await tx.conn.execute(
        update(payments)
        .where(*mine)
        .values(
            next_attempt_at=next_attempt_at,
            last_error=str(error),
            unreached=payments.c.unreached + (1 if missed else 0),
        )
    )


async def perform(
    uow: UnitOfWork, gateway: PaymentGateway, claimed: Sequence[Work], retry: float
) -> None:
    """Make the ``claimed`` calls at once (no transaction open), each in the trace of the
    event that asked for it (its log lines tagged with the order id), then record what they
    met in one transaction, as notifications records its texts': one connection and one
    commit for the batch, where each call took a connection and a commit of its own (a claim
    of 20, twice the pool's size: connections opened and closed for each batch, the pool full
    and the consumers waiting for it). Should that transaction fail, the calls are recorded
    one at a time, so that one the database refuses keeps none of the others from being
    recorded; one not recorded keeps its lease, and is made again with the same key once it
    runs out (answered with its first outcome). A stop hands back those not recorded."""
    what = "the gateway calls " + ", ".join(
        f"({work.status}) of order {work.order_id}" for work in claimed
    )
    async with handing_back(uow, lambda tx: hand_back(tx, claimed), log, what):
        answers = await asyncio.gather(
            *(_call(gateway, work) for work in claimed), return_exceptions=True
        )
        made: list[tuple[Work, Answer]] = []
        for work, answer in sorted(zip(claimed, answers, strict=True), key=_order_id):
            if isinstance(answer, BaseException) and not isinstance(answer, _ANSWERED):
                # Not the gateway's answer (a bug): the call keeps its lease.
                log_retry(log, f"gateway call for order {work.order_id} failed", answer)
            else:
                made.append((work, answer))
        try:
            async with uow.begin() as tx:
                await _record(tx, made, retry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if len(made) == 1:
                log_retry(log, f"recording the gateway call for order {made[0][0].order_id}", exc)
                return
            log.warning(
                "recording %d gateway calls at once failed (%s); recording them one by one",
                len(made),
                reason(exc),
            )
            for work, answer in made:
                try:
                    async with uow.begin() as tx:
                        await _record(tx, [(work, answer)], retry)
                except asyncio.CancelledError:
                    raise
                except Exception as alone:
                    log_retry(log, f"recording the gateway call for order {work.order_id}", alone)


def _order_id(made: tuple[Work, object]) -> str:
    return made[0].order_id


async def _call(gateway: PaymentGateway, work: Work) -> Answer:
    """``work``'s call, made in its span; not made for a charge :attr:`Work.unsent`."""
    if work.unsent:
        return None
    with working_for(work.trace_headers, f"payments gateway {work.status}", work.order_id):
        try:
            if work.status == "charging":
                return await gateway.charge(work.order_id, work.amount_fen, work.buyer_id)
            await gateway.void(work.order_id)
        except _ANSWERED as exc:
            return exc
        return None


async def hand_back(tx: Tx, claimed: Sequence[Work]) -> bool:
    """The ``claimed`` calls unrecorded as the service stops: due again now, rather than once
    their lease runs out; the gateway may have had them, and a call made again with the same
    key is answered with its first outcome. Each only while it is still its claim's (its
    status, and the claim's attempts: not recorded, nor claimed again since); one that has
    moved on is left as it is. Whether any was handed back. Their payments are locked first,
    in order id order, as a consumer's batch locks those it reads (:func:`lock_payments`):
    the statement that writes them locked them in the table's order, and waited for a batch
    holding one while holding another the batch waited for (a deadlock)."""
    if len(claimed) > 1:  # one is locked by the statement that writes it
        await lock_payments(tx, [work.order_id for work in claimed])
    mine = [(work.order_id, work.status, work.attempts) for work in claimed]
    rows = await tx.conn.execute(
        update(payments)
        .where(tuple_(payments.c.order_id, payments.c.status, payments.c.attempts).in_(mine))
        .values(next_attempt_at=func.now())
        .returning(payments.c.order_id)
    )
    return bool(rows.all())


GATEWAY_STUCK_SECONDS = 900.0
"""How long a payment may stay ``charging`` or ``voiding`` (its gateway call due, in flight or
retried) before its retries are told as calls retried for long (:data:`GATEWAY_STUCK`), as
the alert ``CaravanPaymentGatewayCallsStuck`` tells of it
(``caravan_payments_gateway_oldest_seconds``): a charge ends with its order (the saga's
deadline), a void only once the gateway answers it."""
GATEWAY_STUCK = "payment gateway calls retried for long"
"""The retried fault of the calls of payments ``charging`` or ``voiding`` for over
:data:`GATEWAY_STUCK_SECONDS`: said once, then at most once a minute while any goes on (each
line names its order, how long and how many attempts), whether or not other calls are
answered meanwhile (which ends :data:`GATEWAY_AWAY`)."""
GATEWAY_AWAY = "payment gateway away"
"""The prepaid loop's retried fault (:class:`GatewayUnavailable`, whatever its words): one
outage for every order that meets it, said once, then at most once a minute while it lasts
(the first line names its order; each row keeps its attempts and ``last_error``), over when
the gateway answers a call again."""


async def _record(tx: Tx, made: Sequence[tuple[Work, Answer]], retry: float) -> None:
    """Record in ``tx`` what each of the ``made`` calls (in order id order) met
    (:data:`Answer`), each in the trace of the event that asked for it, its log lines tagged
    with the order id. Their payments are locked first, in order id order, as a consumer's
    batch locks those it reads (:func:`lock_payments`): the two wait for each other rather
    than deadlock. Those that end their payment (:func:`_end`: a charge answered or not made,
    a void made or refused) are made in a few statements for them all (:func:`_finish`), where
    each took two or three of its own; a call met with no answer to be sure of is retried
    later, one met with "no such charge" looked into, each in statements of its own."""
    if len(made) > 1:  # one is locked by the statement that writes it
        await lock_payments(tx, [work.order_id for work, _ in made])
    ends = {work.order_id: end for work, answer in made if (end := _end(work, answer))}
    finished = {e.end.work.order_id: e for e in await _finish(tx, list(ends.values()))}
    for work, answer in made:
        with working_for(
            work.trace_headers, f"payments gateway {work.status} recorded", work.order_id
        ):
            if not work.unsent and not isinstance(answer, GatewayUnavailable):
                answers_again(log, GATEWAY_AWAY, "the payment gateway")
            end = ends.get(work.order_id)
            if end is None:
                assert isinstance(answer, GatewayUnavailable)  # as _end says
                await _not_ended(tx, work, answer, retry)
            elif work.order_id in finished:
                await _said(tx, finished[work.order_id])
            elif end.result is not None:
                said = "order %s is no longer charging; gateway answer %s ignored"
                log.info(said, work.order_id, end.result)


async def _not_ended(tx: Tx, work: Work, answer: GatewayUnavailable, retry: float) -> None:
    """``work``'s call met no answer to be sure of (retried later), or "no such charge"."""
    if (
        isinstance(answer, NoSuchCharge)
        and await record_no_such_charge(tx, work, str(answer)) is not None
    ):
        answers_again(log, GATEWAY_AWAY, "the payment gateway")
        return
    delay = exponential_step(work.attempts, retry, cap_seconds=30.0)
    stuck = work.waited >= GATEWAY_STUCK_SECONDS  # said with how long, under its own key
    how_long = f", {work.status} for {work.waited:.0f} s ({work.attempts} attempts)"
    log.warning(
        "gateway: %s for order %s%s; retrying in %.1fs",
        answer,
        work.order_id,
        how_long if stuck else "",
        delay,
        extra=retried(GATEWAY_STUCK if stuck else GATEWAY_AWAY),
    )
    await retry_later(tx, work, delay, answer)


PAYMENTS = Gauge(
    "caravan_payments",
    "Payments by status (charging and voiding: a prepaid gateway call due or in flight)",
    ["status"],
)
GATEWAY_OLDEST = Gauge(
    "caravan_payments_gateway_oldest_seconds",
    "How long the payment charging or voiding the longest has been so: its prepaid gateway"
    " call due, in flight or retried since (0: none)",
)
VOID_REFUSED = Counter(
    "caravan_payments_void_refused",
    "Prepaid charges whose void (the order cancelled, refunded after the sale or never placed)"
    " the gateway refused for good: each owed back to its buyer, by hand (payments.payments:"
    " status void_refused, refund_owed_fen)",
)

LOANS_OWED_BACK = Gauge(
    "caravan_payments_loans_owed_back",
    "Loans voided (their order cancelled, or refunded after the sale) whose buyer had repaid"
    " on them: each owed back to its buyer, by hand (payments.payments: status voided,"
    " refund_owed_fen)",
)
owned_by("payments", PAYMENTS, GATEWAY_OLDEST, VOID_REFUSED, LOANS_OWED_BACK)
OWING_LOAN = in_statuses(payments.c.status, ["voided"]) & payments.c.refund_owed_fen.is_not(None)
"""A voided loan's payment whose buyer is owed back what they repaid: read through the partial
index ``payments_loans_owed_back`` (its predicate, written as literals)."""


@dataclass(frozen=True)
class LoansOwedBack:
    """Samples :data:`LOANS_OWED_BACK` for ``/metrics`` (the alert
    ``CaravanPaymentLoanRefundOwed``, as ``CaravanPaymentVoidRefused`` for a charge): the
    few such payments among every one made, counted at every sample through their index."""

    engine: AsyncEngine

    def counted(self) -> Select[int]:
        return select(func.count()).select_from(payments).where(OWING_LOAN)

    async def sample(self) -> None:
        async with self.engine.connect() as conn:
            LOANS_OWED_BACK.set(await conn.scalar(self.counted()) or 0)


LIVE = (*IN_FLIGHT, "void_refused")
"""The statuses counted at every sample: a gateway call due or in flight (a gateway that does
not answer shows as charges that stay in flight), and a buyer owed a refund by hand (the
alert ``CaravanPaymentVoidRefused``, which clears at the sample after the refund is
recorded)."""


def payments_by_status(engine: AsyncEngine, whole_every: float = 60.0) -> StatusGauge:
    """Payments by status, for ``/metrics``: :data:`LIVE` at every sample, through
    ``payments_gateway_due`` and ``payments_refunds_by_hand``; the others up to
    ``whole_every`` behind (the table keeps every payment; ``refunded`` too, which only
    grows). With them, ``caravan_payments_gateway_oldest_seconds``: how long the payment
    ``charging`` or ``voiding`` the longest has been so (``updated_at``: claims and retries
    leave it), so a call retried for long (the gateway away, refusing us, or not knowing a
    charge it approved) shows, and is alerted on past :data:`GATEWAY_STUCK_SECONDS`
    (``CaravanPaymentGatewayCallsStuck``); a refund owed by hand is not such a call."""
    in_flight_since = case((in_statuses(payments.c.status, IN_FLIGHT), payments.c.updated_at))
    return StatusGauge(
        engine,
        PAYMENTS,
        payments.c.status,
        STATUSES,
        LIVE,
        whole_every,
        in_flight_since,
        GATEWAY_OLDEST,
    )

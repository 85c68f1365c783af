"""Sending queued SMS through the gateway: claim, call, record. Never hold a transaction open
across a gateway call.

1. **Claim** (one short transaction): due rows (``pending`` and due, or ``sending`` whose
   claim lapsed) become ``sending``; ``attempts`` goes up by one (``lapses`` too for a row
   still ``sending``) and ``next_attempt_at`` becomes the end of the claim (the lease). Rows
   are picked ``FOR UPDATE SKIP LOCKED``, so concurrent dispatchers (other instances) never
   claim the same row at once. Recipients who opted out meanwhile are ``suppressed`` here
   instead.
2. **Call** the gateway, outside any transaction, with the row's ``dedup_key``.
3. **Record** (one short transaction for the batch; should it fail, one per row, so that a
   row the database refuses keeps none of the others from being recorded; a transient fault,
   the database away, is waited out with the loops' backoff, what the gateway said kept
   meanwhile, until it is recorded or the process stops), each row
   fenced on ``status = 'sending' AND attempts = <the claimed attempt>``: ``sent`` with
   ``sms.sent`` in the outbox (all the batch's accepted messages in one statement); or back
   to ``pending``
   with ``next_attempt_at`` after an exponential, jittered backoff (at least the gateway's
   ``Retry-After``; reminders also wait out quiet hours); or ``failed`` with ``sms.failed``
   once the attempts are spent or the gateway refused for good.

A row the database will not record even alone (a value it refuses): if the gateway took the
text, the row ends ``failed`` there and then, its reason in ``last_error``, rather than being
sent again after each lease (a gateway that does not deduplicate, as Infobip's by default,
would text the buyer every lease, for ever). A claim that lapsed unrecorded is counted in
``lapses`` by the claim that takes the row over, whatever the gateway said, and (once that
claim commits) in ``caravan_sms_lapsed_claims_total`` (alert ``CaravanTextsClaimLapsed``) with
a warning naming
the text, as one the buyer may get twice (it is sent again); so a row whose
claims keep lapsing (the gateway said no and even that was not recorded, or the dispatcher
died mid-call every time) is given up once ``max_attempts`` of its claims lapsed, whatever its
age (a lapsed claim is not a gateway outage, which is recorded as a retry, counted in
``attempts`` only, and given up by the window in time too): ``failed`` with ``sms.failed``
(``retries_exhausted``), logged once as an error, counted in ``caravan_sms{status="failed"}``.

The guarantee. A database outage while step 3 records only delays it: the dispatcher holds
what the gateway said and records it once PostgreSQL is back, however long that takes (a
recording later than the lease is still right if no other claim took the row meanwhile;
one tried again after its connection was lost may find its first try committed, which is
no lapse: :func:`_recorded_before`). A
graceful stop (SIGTERM) lets the calls in flight finish and be recorded, claiming nothing new
(:func:`shared.loops.finishing`, for at most ``STOPPING_SECONDS``). A crash, or a stop those
seconds were not enough for, after the gateway took a message but before step 3 committed
leaves the row ``sending``; when its lease lapses it is claimed again and resent with the
same ``dedup_key``, which the gateway deduplicates (answering with the first message's id;
the simulator does, Infobip only once idempotency by message id is enabled for the account,
and within its grace period). A dispatcher that outlives its lease (a call slower than it,
an outage longer than it while another instance could still claim) cannot record over a
newer claim: the fence no longer matches and its result is dropped. So the phone gets the
message at most
once (given the gateway's dedup) and at least once (while attempts last), and exactly one
``sms.sent`` is emitted per row. Rows themselves are unique per (event, recipient, purpose)
(see :mod:`services.notifications.handlers`), so redelivery and replay add nothing. The lease
must exceed the gateway timeout, so that a live call is never taken over.

Receipts arrive on the HTTP callback: a ``sent`` row becomes ``delivered`` (``sms.delivered``)
or ``failed`` (``sms.failed``, ``undelivered``) once; a repeated receipt changes nothing, and a
receipt for a message not recorded yet is refused so that the gateway tries it again.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    ARRAY,
    Integer,
    Interval,
    String,
    bindparam,
    case,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Update

from services.notifications.adapters.gateway import (
    Accepted,
    GatewayError,
    OutgoingSms,
    Receipt,
    SmsGateway,
)
from services.notifications.adapters.tables import opt_outs, sms
from services.notifications.domain.delivery import REMINDER_PURPOSES, QuietHours, RetryPolicy
from services.notifications.domain.phones import zone_of
from services.notifications.domain.templates import pick_locale
from shared import days
from shared.backoff import exponential_step
from shared.db import fault, log_retry, reason
from shared.db.driver import fetch
from shared.events.notifications import SmsDelivered, SmsFailed, SmsSent
from shared.logs import answers_again, bind_order, retried, working_for
from shared.loops import finishing
from shared.messaging.uow import Tx, UnitOfWork
from shared.metrics import owned_by
from shared.status_gauge import StatusGauge, in_statuses

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DeliveryPolicy:
    retry: RetryPolicy
    quiet: QuietHours
    lease_seconds: float = 30.0
    batch: int = 50


STATUSES = ("pending", "sending", "sent", "delivered", "failed", "suppressed")
LIVE = STATUSES[:2]  # still to be sent (sms_due); the others are finished (bar a receipt)
_SENDING = in_statuses(sms.c.status, ["sending"])  # claimed: a call under way, or lapsed


def failed_now(error: Any) -> dict[str, Any]:
    """The columns of a text that fails now: its status, when (the transaction's time: GET
    /sms and ``caravan texts`` say it) and why (``error``: text, or an SQL expression)."""
    return {"status": "failed", "failed_at": func.now(), "last_error": error}


# The statements of steps 1 and 3, made once and run on the driver (``shared/db/driver.py``:
# every text queued is claimed and recorded, so they run as often as the handlers' own).
_DUE = (
    select(sms.c.sms_id)
    .where(
        # Literals, as in the ``sms_due`` index's predicate: a parameter would not prove it.
        in_statuses(sms.c.status, LIVE),
        sms.c.next_attempt_at <= func.now(),
    )
    .order_by(sms.c.next_attempt_at)
    .limit(bindparam("batch", type_=Integer))
    .with_for_update(skip_locked=True)
)
_SUPPRESS = (
    update(sms)
    .where(sms.c.sms_id.in_(_DUE), sms.c.to.in_(select(opt_outs.c.phone)))
    .values(status="suppressed")
    .returning(sms.c.sms_id)
)
# A row whose last claim lapsed unrecorded (still ``sending``), that lapse making as many as
# a text may be tried: given up rather than sent again. Its lapses, not its attempts, which
# also count the gateway's failures recorded as retries (an outage the give-up window covers).
_lapsed = sms.c.lapses + 1  # this lapse included: the next claim would count it
_GIVE_UP = (
    update(sms)
    .where(
        sms.c.sms_id.in_(_DUE),
        _SENDING,
        _lapsed >= bindparam("max_attempts", type_=Integer),
    )
    .values(
        lapses=_lapsed,
        **failed_now(
            func.left(
                literal_column("'claimed '")
                .op("||")(sql_cast(sms.c.attempts, String))
                .op("||")(literal_column("' times, '"))
                .op("||")(sql_cast(_lapsed, String))
                .op("||")(literal_column("' never recorded; last said: '"))
                .op("||")(func.coalesce(sms.c.last_error, literal_column("'nothing'"))),
                1000,
            )
        ),
    )
    .returning(*sms.c)
)
# The due rows with the status they had: RETURNING sees only the new one.
_WAS = _DUE.add_columns(sms.c.status.label("was")).subquery("due")
_CLAIM = (
    update(sms)
    .where(sms.c.sms_id == _WAS.c.sms_id)
    .values(
        status="sending",
        attempts=sms.c.attempts + 1,
        # Still sending (not pending): its last claim lapsed unrecorded.
        lapses=sms.c.lapses + case((in_statuses(_WAS.c.was, ["sending"]), 1), else_=0),
        next_attempt_at=func.now() + bindparam("lease", type_=Interval),
    )
    .returning(*sms.c, _WAS.c.was)
)
# The accepted claims of step 3, as arrays bound to unnest (not a VALUES list): one
# statement text for any batch.
_ACCEPTED = (
    func.unnest(
        bindparam("ids", type_=ARRAY(String)),
        bindparam("attempts", type_=ARRAY(Integer)),
        bindparam("providers", type_=ARRAY(String)),
    )
    .table_valued("sms_id", "attempts", "provider_id")
    .render_derived()
)
_SENT = (
    update(sms)
    .where(
        sms.c.sms_id == _ACCEPTED.c.sms_id,
        sms.c.status == "sending",
        sms.c.attempts == _ACCEPTED.c.attempts,
    )
    .values(status="sent", provider_id=_ACCEPTED.c.provider_id, sent_at=func.now(), last_error=None)
    .returning(sms.c.sms_id)
)


async def claim_due(tx: Tx, policy: DeliveryPolicy) -> list[Any]:
    """Step 1: claim due rows for this dispatcher (see the module docstring)."""
    suppressed = await fetch(tx.conn, _SUPPRESS, batch=policy.batch)
    if suppressed:
        log.info("%d sms suppressed: recipients opted out", len(suppressed))
    given_up = await fetch(
        tx.conn, _GIVE_UP, batch=policy.batch, max_attempts=policy.retry.max_attempts
    )
    for row in given_up:
        with traced(row, "notifications sms given up"):
            log.error("sms %s given up: %s", row.sms_id, row.last_error)
            await _failed(tx, row, "retries_exhausted", row.last_error)
    lease = timedelta(seconds=policy.lease_seconds)
    claimed = list(await fetch(tx.conn, _CLAIM, batch=policy.batch, lease=lease))
    for row in claimed:
        if row.was == "sending":
            with traced(row, "notifications sms claim lapsed"):
                log.warning(
                    "sms %s: claim %d lapsed unrecorded; sending it again (claim %d)",
                    row.sms_id,
                    row.attempts - 1,
                    row.attempts,
                )
            tx.after_commit(LAPSED.inc)  # a claim rolled back took nothing over
    return claimed


GATEWAY_AWAY = "SMS gateway away"
"""The dispatcher's retried fault (a transient :class:`GatewayError`, whatever its words: the
gateway down, timing out, busy, refusing our account): one outage for every text that meets
it, said once, then at most once a minute while it lasts (the first line names its text and
order; each row keeps its attempts and last error), over when the gateway answers a text
again (takes it, or refuses it for good)."""


async def call_gateway(gateway: SmsGateway, row: Any) -> Accepted | GatewayError:
    """Step 2: one gateway call; every failure is turned into a :class:`GatewayError`."""
    message = OutgoingSms(sms_id=row.sms_id, dedup_key=row.dedup_key, to=row.to, text=row.text)
    with traced(row, "notifications sms send"):
        try:
            accepted = await gateway.send(message)
        except GatewayError as exc:
            if not exc.transient:  # an answer: this text refused
                answers_again(log, GATEWAY_AWAY, "the SMS gateway")
            return exc
        except Exception as exc:  # a bug or an unexpected answer: retry, bounded
            log.exception("gateway call failed unexpectedly")
            return GatewayError(repr(exc)[:500], transient=True)
        answers_again(log, GATEWAY_AWAY, "the SMS gateway")
        return accepted


@contextmanager
def traced(row: Any, name: str) -> Iterator[None]:
    """A span in the trace of the event that asked for the text ``row`` (the events about it
    carry that trace on; they were emitted outside any), its log lines tagged with the
    text's order id."""
    with working_for(row.trace_headers, name, row.order_id):
        yield


Recorded = Literal["sent", "retry", "failed", "stale"]


async def record(
    tx: Tx, done: Sequence[tuple[Any, Accepted | GatewayError]], policy: DeliveryPolicy
) -> list[Recorded]:
    """Step 3: record what the gateway said about each claimed row, fenced on its claim."""
    results: dict[int, Recorded] = {}
    accepted = [(i, row, out) for i, (row, out) in enumerate(done) if isinstance(out, Accepted)]
    if accepted:
        rows = await fetch(
            tx.conn,
            _SENT,
            ids=[row.sms_id for _, row, _ in accepted],
            attempts=[row.attempts for _, row, _ in accepted],
            providers=[out.provider_id for _, _, out in accepted],
        )
        sent = {row.sms_id for row in rows}
        for i, row, _ in accepted:
            with traced(row, "notifications sms sent"):
                results[i] = await _sent(tx, row) if row.sms_id in sent else "stale"
    for i, (row, outcome) in enumerate(done):
        if isinstance(outcome, GatewayError):
            with traced(row, "notifications sms not sent"):
                results[i] = await _not_sent(tx, row, outcome, policy)
    for i, (row, outcome) in enumerate(done):
        if results[i] == "stale":
            results[i] = await _recorded_before(tx, row, outcome) or "stale"
    return [results[i] for i in range(len(done))]


async def _recorded_before(tx: Tx, row: Any, outcome: Accepted | GatewayError) -> Recorded | None:
    """What this very claim of ``row`` recorded already, that the fence kept from recording
    it again: a recording retried after a transient fault (:func:`_through_faults`) whose
    first try the server committed, the connection lost before its answer came. None if the
    row holds no recording of this claim (a newer claim took it, or ``_GIVE_UP`` or
    ``_SUPPRESS`` ended it): the claim lapsed. Its events went out with that first try."""
    mine = select(sms.c.status, sms.c.provider_id, sms.c.last_error).where(
        sms.c.sms_id == row.sms_id, sms.c.attempts == row.attempts
    )
    found = (await tx.conn.execute(mine)).first()
    if found is None:
        return None
    if isinstance(outcome, Accepted):  # its id is written by this claim's _SENT alone
        return "sent" if found.provider_id == outcome.provider_id else None
    if found.status in ("pending", "failed") and found.last_error == _said(str(outcome)):
        return "retry" if found.status == "pending" else "failed"
    return None


async def _sent(tx: Tx, row: Any) -> Recorded:
    await tx.emit(
        SmsSent(
            sms_id=row.sms_id,
            to=row.to,
            locale=pick_locale(row.locale),
            text=row.text,
            encoding=row.encoding,
            segments=row.segments,
            order_id=row.order_id,
            purpose=row.purpose,
            attempts=row.attempts,
        ),
        correlation_id=row.order_id,
        causation_id=row.caused_by,
    )
    return "sent"


def _said(text: str) -> str:
    """What a gateway said (its error, a receipt's detail), as a row's ``last_error`` and an
    ``sms.failed``'s detail keep it: at most 1000 characters, NUL (which neither holds: the
    row would never be recorded) shown as U+FFFD, as undecodable bytes are."""
    return text[:1000].replace("\x00", "\ufffd")


def _fenced(row: Any) -> Update:
    """An update of ``row`` that holds only while its claim does (no newer one took it)."""
    return update(sms).where(
        sms.c.sms_id == row.sms_id, sms.c.status == "sending", sms.c.attempts == row.attempts
    )


async def _not_sent(tx: Tx, row: Any, outcome: GatewayError, policy: DeliveryPolicy) -> Recorded:
    fence = _fenced(row)
    error = _said(str(outcome))
    now = datetime.now(UTC)
    # Counted from when the text was first allowed to go: reminders held through quiet hours
    # go out in a burst at their end, which must get the whole grace.
    since = row.not_before or row.created_at
    age = (now - since).total_seconds()
    if outcome.transient and not policy.retry.exhausted(row.attempts, age):
        at = now + timedelta(seconds=policy.retry.delay(row.attempts, outcome.retry_after))
        if row.purpose in REMINDER_PURPOSES:
            held = policy.quiet.next_allowed(at, zone_of(row.to, days.market_zone()))
            # A retry put off until quiet hours end: the hours held are not counted either.
            since, at = since + (held - at), held
        done = await tx.conn.execute(
            fence.values(
                status="pending", next_attempt_at=at, not_before=since, last_error=error
            ).returning(sms.c.sms_id)
        )
        said = "sms %s attempt %d failed (%s); next at %s"
        log.warning(said, row.sms_id, row.attempts, error, at, extra=retried(GATEWAY_AWAY))
        return "retry" if done.first() is not None else "stale"
    done = await tx.conn.execute(fence.values(**failed_now(error)).returning(sms.c.sms_id))
    if done.first() is None:
        return "stale"
    log.warning("sms %s failed after %d attempts: %s", row.sms_id, row.attempts, error)
    await _failed(tx, row, "retries_exhausted" if outcome.transient else "rejected", error)
    return "failed"


async def _failed(
    tx: Tx, row: Any, reason: Literal["retries_exhausted", "rejected"], detail: str
) -> None:
    """``sms.failed`` for ``row``, set ``failed`` in ``tx``."""
    await tx.emit(
        SmsFailed(
            sms_id=row.sms_id,
            to=row.to,
            reason=reason,
            detail=detail,
            attempts=row.attempts,
            order_id=row.order_id,
            purpose=row.purpose,
        ),
        correlation_id=row.order_id,
        causation_id=row.caused_by,
    )


async def dispatch_once(uow: UnitOfWork, gateway: SmsGateway, policy: DeliveryPolicy) -> int:
    """Claim, call and record one batch; the number of rows claimed."""
    async with uow.begin() as tx:
        rows = await claim_due(tx, policy)
    if not rows:
        return 0
    what = f"the gateway calls of sms {', '.join(row.sms_id for row in rows)}"
    await finishing(_send(uow, gateway, rows, policy), log, what)
    return len(rows)


async def _send(
    uow: UnitOfWork, gateway: SmsGateway, rows: list[Any], policy: DeliveryPolicy
) -> None:
    """Steps 2 and 3 for the claimed ``rows``, which a graceful stop lets finish
    (:func:`shared.loops.finishing`): cut short, a call the gateway took would leave its text
    to its lease, then sent again, twice to the phone unless the gateway deduplicates by our
    key."""
    outcomes = await asyncio.gather(*(call_gateway(gateway, row) for row in rows))
    done = list(zip(rows, outcomes, strict=True))
    results: Sequence[Recorded | None]
    try:
        results = await _through_faults(lambda: _record_batch(uow, done, policy), len(done))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # Its reason (kind, message, SQLSTATE), not its repr, which may quote a row's values
        # (a pydantic ValidationError's input, a refused value: a phone number).
        said = reason(exc)
        log.warning(
            "recording %d sms at once failed (%s); recording them one by one", len(done), said
        )
        results = [await _record_alone(uow, row, outcome, policy) for row, outcome in done]
    for (row, _), result in zip(done, results, strict=True):
        if result == "stale":
            with bind_order(row.order_id):
                log.warning(
                    "sms %s: claim %d lapsed before it was recorded", row.sms_id, row.attempts
                )


async def _through_faults(attempt: Callable[[], Awaitable[T]], texts: int) -> T:
    """``attempt()`` (recording what the gateway said of ``texts`` texts), tried again after
    each transient fault (the database away) with the loops' backoff, for as long as it takes:
    the gateway's answers are kept meanwhile. Dropped, their rows would stay ``sending`` and
    be sent again once their lease lapsed (a buyer texted twice after a database blip, by a
    gateway that does not deduplicate by our key). Late is safe: the fence records nothing
    over a newer claim. Any other failure is raised; so is cancellation (a stop that could not
    wait for it: :func:`shared.loops.finishing`; its rows lapse)."""
    failures = 0
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not fault(exc).kind.transient:
                raise
            failures += 1
            log_retry(log, f"recording {texts} sms failed (the gateway's answers kept)", exc)
            await asyncio.sleep(exponential_step(failures, 0.1, 5.0))


async def _record_batch(
    uow: UnitOfWork, done: Sequence[tuple[Any, Accepted | GatewayError]], policy: DeliveryPolicy
) -> list[Recorded]:
    async with uow.begin() as tx:
        return await record(tx, done, policy)


async def _record_alone(
    uow: UnitOfWork, row: Any, outcome: Accepted | GatewayError, policy: DeliveryPolicy
) -> Recorded | None:
    """Record one row in a transaction of its own, so that a row the database refuses (a
    value it will not take) keeps none of the batch's others from being recorded. Such a row
    the gateway took is given up there and then (:func:`_given_up_unrecorded`); one it did
    not take stays ``sending`` (None), claimed again once its lease lapses, until
    ``max_attempts`` of its claims lapsed (``_GIVE_UP``). A transient fault (the database
    away) is waited out (:func:`_through_faults`)."""
    try:
        [result] = await _through_faults(lambda: _record_batch(uow, [(row, outcome)], policy), 1)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # Its reason, not its traceback, whose message may quote the row's values.
        said = reason(exc)
        log.warning("sms %s: recording claim %d failed: %s", row.sms_id, row.attempts, said)
        if isinstance(outcome, Accepted):
            return await _given_up_unrecorded(uow, row, exc)
        return None
    return result


async def _given_up_unrecorded(uow: UnitOfWork, row: Any, exc: Exception) -> Recorded | None:
    """``row`` set ``failed``, with ``sms.failed`` (``retries_exhausted``) and why: the
    gateway took the text but the database refuses to record it (said as a dead letter says
    it, :func:`shared.db.reason`: its kind, message and SQLSTATE, no value of the row).
    Claimed again, it would be sent again after every lease, and a gateway that does not
    deduplicate by our key texts the buyer each time. None if even this is refused (the row
    is left to ``_GIVE_UP``); a transient fault is waited out (:func:`_through_faults`)."""
    error = _said(f"the gateway took it; recording that failed: {reason(exc)}")

    async def give_up() -> Recorded:
        async with uow.begin() as tx:
            done = await tx.conn.execute(
                _fenced(row).values(**failed_now(error)).returning(sms.c.sms_id)
            )
            if done.first() is None:
                return "stale"
            await _failed(tx, row, "retries_exhausted", error)
        return "failed"

    try:
        result = await _through_faults(give_up, 1)
    except asyncio.CancelledError:
        raise
    except Exception as again:
        log.warning("sms %s: giving it up failed too (%s)", row.sms_id, reason(again))
        return None
    if result == "failed":
        log.error(
            "sms %s given up after %d attempts, not sent again: %s", row.sms_id, row.attempts, error
        )
    return result


async def apply_receipt(tx: Tx, receipt: Receipt) -> Literal["applied", "duplicate", "unknown"]:
    """A delivery receipt: ``sent`` -> ``delivered`` or ``failed``, once."""
    said = (
        {"status": "delivered", "delivered_at": func.now(), "last_error": None}
        if receipt.delivered
        else failed_now(_said(receipt.detail))
    )
    row = (
        await tx.conn.execute(
            update(sms)
            .where(sms.c.provider_id == receipt.provider_id, sms.c.status == "sent")
            .values(**said)
            .returning(*sms.c)
        )
    ).first()
    if row is None:
        known = await tx.conn.scalar(
            select(func.count()).where(sms.c.provider_id == receipt.provider_id)
        )
        return "duplicate" if known else "unknown"
    with traced(row, "notifications sms receipt"):
        await _emit_receipt(tx, row, receipt)
    return "applied"


async def _emit_receipt(tx: Tx, row: Any, receipt: Receipt) -> None:
    if receipt.delivered:
        await tx.emit(
            SmsDelivered(sms_id=row.sms_id, to=row.to, order_id=row.order_id, purpose=row.purpose),
            correlation_id=row.order_id,
            causation_id=row.caused_by,
        )
    else:
        await tx.emit(
            SmsFailed(
                sms_id=row.sms_id,
                to=row.to,
                reason="undelivered",
                detail=_said(receipt.detail),
                attempts=row.attempts,
                order_id=row.order_id,
                purpose=row.purpose,
            ),
            correlation_id=row.order_id,
            causation_id=row.caused_by,
        )


SMS = Gauge("caravan_sms", "Texts by status (pending, sending, sent, ...)", ["status"])
OLDEST_DUE = Gauge(
    "caravan_sms_oldest_due_seconds",
    "How long the oldest text due and not sent (pending or being sent) has waited since it was"
    " first due (0: none): the gateway hanging or refusing, or the dispatcher stopped",
)
LAPSED = Counter(
    "caravan_sms_lapsed_claims",
    "Texts claimed again after a claim lapsed unrecorded (the dispatcher crashed, was killed or"
    " stopped between claiming and recording, or outlived its lease) and so sent again: each"
    " one the buyer may get twice, if the gateway took it the first time and does not"
    " deduplicate by our key",
)
owned_by("notifications", SMS, OLDEST_DUE, LAPSED)


def sms_by_status(engine: AsyncEngine, whole_every: float = 60.0) -> StatusGauge:
    """Texts by status, for ``/metrics``: those waiting to go or being sent at every sample
    (through ``sms_due``), the others up to ``whole_every`` behind (the table keeps every
    text still to be sent, and the finished ones ``notifications_sms_retention_days``). A
    gateway refusing every text (its key expired, say) shows here as texts pending while
    everything else looks normal; one hanging (each call timed out and retried), as the
    oldest text due waiting ever longer (``caravan_sms_oldest_due_seconds``, alert
    ``CaravanTextsWaiting``): due since ``not_before``, or ``created_at`` on rows older than
    it."""
    due_since = func.coalesce(sms.c.not_before, sms.c.created_at)
    return StatusGauge(
        engine, SMS, sms.c.status, STATUSES, LIVE, whole_every, due_since, OLDEST_DUE
    )

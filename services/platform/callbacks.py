"""Telling platforms their orders' outcomes: claim, call, record, never holding a transaction
open across a call (the pattern of :mod:`services.notifications.dispatch`).

1. **Claim** (one short transaction): due rows (``pending`` and due, or ``sending`` whose
   lease lapsed) become ``sending``, ``attempts`` + 1, ``next_attempt_at`` = end of the lease;
   ``FOR UPDATE SKIP LOCKED``, so instances never claim the same row at once.
2. **Call** the platform's status API with the terminal event's id as idempotency key.
3. **Record**, fenced on ``status = 'sending' AND attempts = <claimed attempt>``:
   ``delivered``; or back to ``pending`` after an exponential, jittered backoff; or
   ``failed`` when the platform refused for good or the attempts are spent.

A crash between the call and the record leaves the row ``sending``; when its lease lapses it
is called again with the same key, which the platform applies once. A graceful stop (SIGTERM)
does not wait for the lease: the claimed rows not yet recorded are handed back
(:func:`hand_back`), due again at once for any instance. The rows are durable, so
callbacks survive restarts and platform outages; ``failed`` ones stay listed for operations.
The call and its record are spans in the order's trace: that of the terminal event told,
stored with the row (:func:`traced`).
"""

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, get_args

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.platform.adapters.platform_api import PlatformApi, PlatformUnavailable, StatusUpdate
from services.platform.adapters.tables import callbacks
from services.platform.domain.retries import Backoff, CallbackStatus, Verdict, verdict
from services.platform.metrics import CALLBACK_CALLS, CALLBACKS, CALLBACKS_OLDEST
from shared.logs import answers_again, retried, working_for
from shared.loops import handing_back
from shared.messaging.uow import Tx, UnitOfWork
from shared.status_gauge import StatusGauge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallbackPolicy:
    backoff: Backoff
    lease_seconds: float = 30.0
    batch: int = 50


async def claim_due(tx: Tx, policy: CallbackPolicy, apps: Iterable[str]) -> list[Any]:
    """Due rows of ``apps``, the apps this instance can call: a row of an app it lacks (one
    added while another instance still runs the old settings) waits for an instance that has
    it, rather than failing for good on this one."""
    due = (
        select(callbacks.c.event_id)
        .where(
            callbacks.c.status.in_(("pending", "sending")),
            callbacks.c.next_attempt_at <= func.now(),
            callbacks.c.app.in_(sorted(apps)),
        )
        .order_by(callbacks.c.next_attempt_at)
        .limit(policy.batch)
        .with_for_update(skip_locked=True)
    )
    return list(
        (
            await tx.conn.execute(
                update(callbacks)
                .where(callbacks.c.event_id.in_(due))
                .values(
                    status="sending",
                    attempts=callbacks.c.attempts + 1,
                    next_attempt_at=func.now() + timedelta(seconds=policy.lease_seconds),
                )
                .returning(*callbacks.c)
            )
        ).all()
    )


def api_away(app: str) -> str:
    """The retried fault of ``app``'s status API (a call to retry, whatever its words: no
    answer, a 5xx, 429, our signature refused): one outage for every callback to that app
    that meets it, said once, then at most once a minute while it lasts (the first line
    names its order; each row keeps its attempts and last error), over when the API answers
    a call again (takes it, or refuses it for good)."""
    return f"status API of {app} away"


async def call(api: PlatformApi, row: Any) -> tuple[Verdict, str | None]:
    """One status API call (of an app ``api`` has: :func:`claim_due`): its verdict, and what
    went wrong if anything."""
    update_ = StatusUpdate(
        row.event_id, row.platform_order_id, row.outcome, row.reason, row.order_id
    )
    with traced(row, "platform status callback"):
        try:
            status = await api.push_status(row.app, update_)
        except PlatformUnavailable as exc:
            return "retry", str(exc)[:1000]
        except Exception as exc:  # a bug or an unexpected answer: retry, bounded
            log.exception("status callback failed unexpectedly")
            return "retry", repr(exc)[:1000]
        result = verdict(status)
        if result != "retry":
            answers_again(log, api_away(row.app), f"the status API of {row.app}")
    return result, None if result == "delivered" else f"status API answered {status}"


@contextmanager
def traced(row: Any, name: str) -> Iterator[None]:
    """A span in the trace of the terminal event that the callback ``row`` tells (stored
    with it), its log lines tagged with the order id."""
    with working_for(row.trace_headers, name, row.order_id):
        yield


async def record(
    tx: Tx, row: Any, result: Verdict, error: str | None, policy: CallbackPolicy
) -> str:
    fence = update(callbacks).where(
        callbacks.c.event_id == row.event_id,
        callbacks.c.status == "sending",
        callbacks.c.attempts == row.attempts,
    )
    if result == "retry" and policy.backoff.exhausted(row.attempts):
        result = "failed"
    if result == "delivered":
        values: dict[str, Any] = {"status": "delivered", "delivered_at": func.now()}
    elif result == "retry":
        # On the database's clock, as the claim reads it: the service's clock behind it by
        # more than a delay made that retry due at once, and an outage used up the attempts.
        delay = timedelta(seconds=policy.backoff.delay(row.attempts))
        values = {"status": "pending", "next_attempt_at": func.now() + delay}
    else:
        values = {"status": "failed"}
    done = await tx.conn.execute(
        fence.values(last_error=error, **values).returning(callbacks.c.event_id)
    )
    if done.first() is None:
        return "stale"
    tx.after_commit(CALLBACK_CALLS.labels(row.app, result).inc)
    if result == "failed":
        log.warning(
            "status callback of %s/%s failed after %d attempts: %s",
            row.app,
            row.platform_order_id,
            row.attempts,
            error,
        )
    elif result == "retry":
        said = "status callback of %s/%s: %s; retrying"
        log.warning(said, row.app, row.platform_order_id, error, extra=retried(api_away(row.app)))
    return result


async def deliver_once(uow: UnitOfWork, api: PlatformApi, policy: CallbackPolicy) -> int:
    """Claim, call and record one batch; the number of rows claimed."""
    async with uow.begin() as tx:
        rows = await claim_due(tx, policy, api.apps)
    if not rows:
        return 0
    what = f"the status callbacks of orders {', '.join(row.order_id for row in rows)}"
    async with handing_back(uow, lambda tx: hand_back(tx, rows), log, what):
        results = await asyncio.gather(*(call(api, row) for row in rows))
        for row, (result, error) in zip(rows, results, strict=True):
            with traced(row, "platform status callback recorded"):
                async with uow.begin() as tx:
                    await record(tx, row, result, error, policy)
    return len(rows)


async def hand_back(tx: Tx, rows: Sequence[Any]) -> bool:
    """Claimed ``rows`` unrecorded as the service stops: due again now, rather than once
    their lease lapses (called again with the same key, which the platform applies once);
    each only while it is still its claim's (``sending``, the claim's attempts: not recorded,
    nor claimed again since). Whether any was."""
    claimed = [(row.event_id, row.attempts) for row in rows]
    done = await tx.conn.execute(
        update(callbacks)
        .where(
            tuple_(callbacks.c.event_id, callbacks.c.attempts).in_(claimed),
            callbacks.c.status == "sending",
        )
        .values(next_attempt_at=func.now())
        .returning(callbacks.c.event_id)
    )
    return bool(done.all())


STATUSES: tuple[str, ...] = get_args(CallbackStatus)


def callbacks_by_status(engine: AsyncEngine, whole_every: float = 60.0) -> StatusGauge:
    """Callbacks by status, for ``/metrics``: those pending or being sent at every sample
    (through ``callbacks_due``), delivered and failed ones up to ``whole_every`` behind (the
    table keeps a callback for every platform order's outcome); and how long the oldest of
    them has waited since it was queued (``caravan_platform_callbacks_oldest_seconds``, alert
    ``CaravanPlatformCallbacksWaiting``): a status API that hangs, fails or refuses our
    signature has its callbacks retried (for about two hours by default) before any fails,
    and meanwhile their count stays flat."""
    return StatusGauge(
        engine,
        CALLBACKS,
        callbacks.c.status,
        STATUSES,
        STATUSES[:2],
        whole_every,
        callbacks.c.created_at,
        CALLBACKS_OLDEST,
    )

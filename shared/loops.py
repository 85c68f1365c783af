"""A service's background loops, one way each: a sweep every so often (:func:`sweeping`),
and work that the commits queuing it wake (:func:`woken`). A failed round is logged on the
service's logger (:func:`shared.db.log_retry`: a transient fault, such as the database
restarting, a one-line warning) and tried again; a loop ends only when it is cancelled.
Work a loop claimed under a lease and was doing when it was cancelled (a graceful stop) is
handed back (:func:`handing_back`), or, where handing it back would do it twice (a text the
gateway may have taken), let finish (:func:`finishing`)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shared.db import log_retry, reason
from shared.messaging.uow import Tx, UnitOfWork

T = TypeVar("T")


async def sweeping(
    sweep: Callable[[], Awaitable[int]],
    interval: float,
    log: logging.Logger,
    found: str | None,
    failed: str,
) -> None:
    """``sweep()`` every ``interval`` seconds, and again at once after a round that found
    something (logged as ``found % n``; None: the sweep says it), so that a backlog is
    worked off without waiting."""
    while True:
        try:
            n = await sweep()
            if n:
                if found is not None:
                    log.info(found, n)
                continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_retry(log, failed, exc)
        await asyncio.sleep(interval)


async def woken(
    work: Callable[[], Awaitable[object]],
    wake: asyncio.Event,
    interval: float,
    log: logging.Logger,
    failed: str,
    gather: float = 0.0,
) -> None:
    """``work()``, again at once while its answer is true (it found work: more may wait);
    else once ``wake`` is set (by a commit that queued some) and ``gather`` seconds more for
    others to come with it, or after ``interval`` seconds (work come due meanwhile). A failed
    round waits a second more."""
    while True:
        wake.clear()  # before looking, so that a commit while we look is not missed
        try:
            if await work():
                continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_retry(log, failed, exc)
            await asyncio.sleep(1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
            if gather:
                await asyncio.sleep(gather)


STOPPING_SECONDS = 5.0
"""How long a stopping service spends on the work a loop claimed: handing it back
(:func:`handing_back`) or letting it finish (:func:`finishing`); one bound for both, so a
stop takes no longer than either (with the outbox relay's 5 s after it, within the 15 s a
supervisor allows)."""


@contextlib.asynccontextmanager
async def handing_back(
    uow: UnitOfWork,
    give_back: Callable[[Tx], Awaitable[bool]],
    log: logging.Logger,
    what: str,
) -> AsyncIterator[None]:
    """Claimed work, done in the block. Cancelled (a graceful stop cancels the service's
    loops: :mod:`shared.runtime`), it is handed back before the cancellation goes on:
    ``give_back(tx)``, in a transaction of ``uow``'s, makes it due again now, for any
    instance to take at once rather than once its lease runs out; False: it was not this
    claim's any more (recorded, or claimed again). One info line says so, naming ``what``; a
    hand-back that fails, or takes over :data:`STOPPING_SECONDS` (the database away),
    leaves the work to its lease, as a crash does, with a warning."""
    try:
        yield
    except asyncio.CancelledError:
        try:
            async with asyncio.timeout(STOPPING_SECONDS), uow.begin() as tx:
                given = await give_back(tx)
        except Exception as exc:
            log.warning("%s unfinished as the service stops, left to its lease: %r", what, exc)
        else:
            if given:
                log.info("%s unfinished as the service stops: handed back, due again now", what)
        raise


async def finishing(work: Coroutine[Any, Any, T], log: logging.Logger, what: str) -> T:
    """``work`` (claimed calls made and what they answered recorded), which a graceful stop
    lets finish rather than cutting it short: run in a task of its own, shielded from the
    cancellation of the caller (a graceful stop cancels the service's loops:
    :mod:`shared.runtime`). Cancelled, the caller waits up to :data:`STOPPING_SECONDS` for it,
    one info line saying it finished, naming ``what``, before the cancellation goes on. Work
    that fails then, or is not done by then (a call hanging, the database away), is cancelled
    and left to its lease, as a crash leaves it, with a warning."""
    task = asyncio.create_task(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task], timeout=STOPPING_SECONDS)
        if not task.done():
            said = f"not done within {STOPPING_SECONDS:g} s"
        elif (exc := task.exception()) is not None:
            said = reason(exc)
        else:
            log.info("%s finished as the service stops", what)
            raise
        log.warning("%s unfinished as the service stops, left to its lease: %s", what, said)
        raise
    finally:
        if not task.done():  # given up, or the caller cancelled again while it waited
            task.cancel()
            await asyncio.wait([task])

"""A service's background loops, one way each: a sweep every so often, and work that the
commits queuing it wake. A failed round is logged on the service's logger
(:func:`shared.db.log_retry`: a transient fault, such as the database restarting, a one-line
warning) and tried again; a loop ends only when it is cancelled."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.db import log_retry


async def sweeping(
    sweep: Callable[[], Awaitable[int]],
    interval: float,
    log: logging.Logger,
    found: str,
    failed: str,
) -> None:
    """``sweep()`` every ``interval`` seconds, and again at once after a round that found
    something (logged as ``found % n``), so that a backlog is worked off without waiting."""
    while True:
        try:
            n = await sweep()
            if n:
                log.info(found, n)
                continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_retry(log, failed, exc)
        await asyncio.sleep(interval)

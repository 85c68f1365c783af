"""How late a service's event loop runs what is due: a task asks to wake every
:data:`WAKE_SECONDS` and notes how late it woke. A loop busy with a long synchronous step (a
big batch parsed, a slow query's rows built) or short of CPU (a load of 25 on two cores) wakes
every task late, and hears every answer late, PostgreSQL's too: ``/healthz`` whose ``SELECT
1`` timed out while the loop was as late says so (:func:`not_heard`), where it said "cannot
reach PostgreSQL" of a database that had answered in a millisecond, and so does a request's
503 (:class:`shared.http.Deadline`), where it said "the database did not answer".
``/metrics`` shows it (``caravan_event_loop_lag_seconds``). The cost: two wakes a second."""

import asyncio
from collections import deque

from shared.api import SERVICE_LOOP_LATE

WAKE_SECONDS = 0.5
"""How often the loop is asked to wake a task, whose lateness is noted."""
KEPT_SECONDS = 15.0
"""How long each wake's lateness is kept: ``caravan_event_loop_lag_seconds`` says the most of
them (a scrape every 15 s sees each), and ``/healthz`` reads those of its own wait."""


class LoopLag:
    """The lateness of the wakes of the last :data:`KEPT_SECONDS`, noted by :meth:`run`."""

    def __init__(self, wake: float = WAKE_SECONDS, kept: float = KEPT_SECONDS) -> None:
        self.wake = wake
        self.kept = kept
        self._due: float | None = None  # when the wake awaited is due (the loop's clock)
        self._woke: deque[tuple[float, float]] = deque()  # (when, how late) of each wake

    async def run(self) -> None:
        """Wake every :attr:`wake` seconds and note how late, until cancelled; the process's
        lateness from now on (:func:`process_late`: the services a process hosts share its
        loop)."""
        global _running
        loop = asyncio.get_running_loop()
        _running = self, loop
        try:
            await self._wake(loop)
        finally:  # stopped: no longer this process's measure (a test's next loop has its own)
            if _running == (self, loop):
                _running = None

    async def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._due = due = loop.time() + self.wake
            await asyncio.sleep(self.wake)
            now = loop.time()
            self._woke.append((now, max(0.0, now - due)))
            while self._woke[0][0] < now - self.kept:
                self._woke.popleft()

    def since(self, began: float) -> float:
        """The most the loop was late (seconds) waking the task since ``began`` (the loop's
        clock), the wake awaited counted as late as it is now: a loop blocked still is late.
        0 while :meth:`run` has not run."""
        now = asyncio.get_running_loop().time()
        late = max((late for woke, late in self._woke if woke >= began), default=0.0)
        if self._due is not None:
            late = max(late, now - self._due)
        return late

    def lately(self) -> float:
        """The most the loop was late in the last :attr:`kept` seconds."""
        return self.since(asyncio.get_running_loop().time() - self.kept)


def not_heard(late: float, within: float) -> str | None:
    """What is said of a wait of ``within`` seconds for PostgreSQL's answer that timed out
    while the loop was ``late`` seconds late (``/healthz``'s ``SELECT 1``, a request's
    database work: :class:`shared.http.Deadline`): None where that is less than a quarter of
    the wait (the answer is heard after a few turns of the loop: a connection's ping, the
    statement's answer), and the timeout PostgreSQL's."""
    if late < within / 4:
        return None
    return (
        f"{SERVICE_LOOP_LATE} {late:.1f} s late; PostgreSQL's answer may not have been heard within"
        f" {within:g} s"
    )


_running: tuple[LoopLag, asyncio.AbstractEventLoop] | None = None
"""The :class:`LoopLag` running in this process, and the loop it runs in (:func:`process_late`)."""

HELD_SECONDS = 5.0
"""How late the process's loop ran, at least, for a fault met meanwhile to be the process's
own (:func:`held_through`): a few seconds held times out no client's request or session."""


def process_late() -> float:
    """How late this process's event loop ran lately (:meth:`LoopLag.lately` of the one that
    runs in it); 0 where none runs, or asked outside the loop."""
    if _running is None:
        return 0.0
    lag, loop = _running
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # asked from a thread
        return 0.0
    return lag.lately() if running is loop else 0.0


def held_through(lasted: float) -> float | None:
    """How late the process's loop ran lately, where that is :data:`HELD_SECONDS` or more and
    at least the ``lasted`` seconds of a fault it met (a server found away, then answering):
    the process itself was held (``kill -STOP``, swapped out, short of CPU), its clients'
    requests and sessions timed out by its own clock as it ran again, not the server away.
    None otherwise: the fault the server's."""
    late = process_late()
    return late if late >= max(HELD_SECONDS, lasted) else None

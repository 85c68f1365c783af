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
        """Wake every :attr:`wake` seconds and note how late, until cancelled."""
        loop = asyncio.get_running_loop()
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

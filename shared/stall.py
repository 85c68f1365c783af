"""Work that waits and does not move: records on a partition past what the service's
consumer group has handled, rows of its outbox not published. The figures a service samples
every few seconds (:mod:`shared.observe`) say, for each queue, where its consumer stands and
how much waits past that; a queue whose position has not moved while work waited is
stalled since the first sample that saw it so. ``/healthz`` names a stall longer than its
setting (:mod:`shared.http`), ``/metrics`` shows each one's seconds.

A quiet queue (nothing waiting) is never stalled, nor is a backlog that moves, however
long: its position changes from one sample to the next."""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Stalled:
    """A queue with ``waiting`` items and no progress for ``seconds``."""

    queue: str
    waiting: int
    seconds: float


@dataclass(frozen=True)
class _Seen:
    position: int
    waiting: int
    since: float


class Stalls:
    """The queues of one kind (a consumer's partitions, an outbox) as last sampled."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[str, _Seen] = {}

    def sampled(self, queues: Mapping[str, tuple[int, int]]) -> None:
        """A sample of every queue: its position and how much waits past it. One not named
        is gone (a partition of a topic deleted), one with nothing waiting is not stalled;
        one whose position is not what the last sample saw has moved since."""
        now = self.clock()
        seen = {}
        for queue, (position, waiting) in queues.items():
            if waiting <= 0:
                continue
            before = self._seen.get(queue)
            same = before is not None and before.position == position
            seen[queue] = _Seen(position, waiting, before.since if before and same else now)
        self._seen = seen

    def seconds(self, queue: str) -> float:
        """How long ``queue`` has had work waiting with none done (0: none waits)."""
        seen = self._seen.get(queue)
        return 0.0 if seen is None else self.clock() - seen.since

    def stalled(self, after: float) -> list[Stalled]:
        """The queues stalled for more than ``after`` seconds, by name."""
        found = [Stalled(q, s.waiting, self.seconds(q)) for q, s in sorted(self._seen.items())]
        return [s for s in found if s.seconds > after]


def consumer_said(stalls: Stalls, after: float) -> str:
    """``/healthz``'s word on a consumer's partitions: ``ok``, or what waits where and for
    how long, e.g. ``3 records waiting on orders.events.v1[0], none handled for 75 s``."""
    found = stalls.stalled(after)
    if not found:
        return "ok"
    waiting = sum(s.waiting for s in found)
    where = ", ".join(s.queue for s in found)
    records = "record" if waiting == 1 else "records"
    longest = max(s.seconds for s in found)
    return f"{waiting} {records} waiting on {where}, none handled for {longest:.0f} s"


OUTBOX = "outbox"
"""The outbox's queue in its :class:`Stalls` (a service has one)."""


def relay_said(stalls: Stalls, after: float) -> str:
    """``/healthz``'s word on the outbox: ``ok``, or ``12 outbox rows unsent, none published
    for 75 s``."""
    found = stalls.stalled(after)
    if not found:
        return "ok"
    (outbox,) = found
    rows = "row" if outbox.waiting == 1 else "rows"
    return f"{outbox.waiting} outbox {rows} unsent, none published for {outbox.seconds:.0f} s"

"""A gauge of a table's rows by status, for a service's ``/metrics`` (one of its probes), and
of how long the oldest of its work due has waited."""

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import ColumnElement, Select, extract, func, literal_column, null, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

_NAME = re.compile(r"[a-z_]+")


def in_statuses(status: ColumnElement[str], statuses: Sequence[str]) -> ColumnElement[bool]:
    """``status`` is one of ``statuses``, written so that PostgreSQL reads each through a
    partial index of its rows: literals (a parameter proves no index's predicate, and a
    prepared statement's generic plan sees one), one status to an arm of an OR (one
    ``IN`` list would need a single index holding them all; the arms are read apart and
    joined, ``BitmapOr``). Statuses are names the code gives, never a caller's text."""
    for s in statuses:
        if not _NAME.fullmatch(s):
            raise ValueError(f"not a status: {s!r}")
    return or_(*(status == literal_column(f"'{s}'") for s in statuses))


@dataclass
class StatusGauge:
    """Samples ``gauge`` (labelled by status) with the rows of ``status``'s table: those in
    the ``live`` statuses at every sample, each through a partial index of its status, and
    the whole table by status every ``whole_every`` seconds.

    Such a table keeps every row ever made (an order, a platform order's callback): counting
    it by status is a sequential scan, which took PostgreSQL 200 ms in the benchmark's orders
    table, and the figures are sampled every 5 s (10 % of PostgreSQL's time in a closed
    loop). The other statuses are therefore up to ``whole_every`` behind.

    With ``due_since`` (when a row's work was first due) and ``oldest``, the same reading of
    the ``live`` rows also sets ``oldest`` to the age of the oldest of them due (0: none): a
    backlog its workers claim and retry without end (the gateway they call hanging, each call
    timed out and retried) shows there as work waiting ever longer, while the counts stay
    flat."""

    engine: AsyncEngine
    gauge: Gauge
    status: ColumnElement[str]
    statuses: Sequence[str]
    live: Sequence[str]
    whole_every: float = 60.0
    due_since: ColumnElement[datetime] | None = None
    oldest: Gauge | None = None
    _next_whole: float = field(default=0.0, init=False)

    def _counted(self) -> Select[str, int, Any]:
        """Rows by status: their count, and the age in seconds of the oldest due (None: none
        is, or no ``due_since``)."""
        if self.due_since is None:
            age: ColumnElement[Any] = null()
        else:  # EXTRACT, not func.extract: its field a keyword, not a parameter
            first = func.min(self.due_since).filter(self.due_since <= func.now())
            age = extract("epoch", func.now() - first)
        return select(self.status, func.count(), age).group_by(self.status)

    def count_live(self) -> Select[str, int, Any]:
        return self._counted().where(in_statuses(self.status, self.live))

    async def sample(self) -> None:
        now = time.monotonic()
        whole = now >= self._next_whole
        async with self.engine.connect() as conn:
            rows = (await conn.execute(self._counted() if whole else self.count_live())).all()
        counts = {status: count for status, count, _ in rows}
        for status in self.statuses if whole else self.live:
            self.gauge.labels(status).set(counts.get(status, 0))
        if self.oldest is not None:
            ages = [float(age) for status, _, age in rows if status in self.live and age]
            self.oldest.set(max(ages, default=0.0))
        if whole:
            self._next_whole = now + self.whole_every

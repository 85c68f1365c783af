"""The unit of work: one database transaction holding a state change and the events it emits.

Handlers never publish to Kafka themselves (that would be a dual write). They call
:meth:`Tx.emit`, which adds an outbox row in the same transaction; the relay publishes it.

Outbox rows, and other rows that nothing reads back in the transaction
(:meth:`Tx.insert_later`, :meth:`Tx.update_later`), are written just before it commits: one
part per table (a batch of records handled together emits many events), and the parts in
one statement, so that a step's writes cost one round trip.

A batch's records are handled in one transaction. Its subscription may load and lock, in a
few statements, what their handlers will read (``Subscription.prefetch``); repositories keep
what they loaded in :attr:`Tx.identity`, one copy of each row per transaction however many
of the batch's records touch it.

A transaction that added outbox rows wakes the relay once it commits; one that queued other
work for a loop of the service says so with :meth:`Tx.signal`, and that loop is woken. A
commit that queued nothing wakes nothing (no empty relay transaction after every commit).
What a transaction did is counted once it commits (:meth:`Tx.after_commit`).
"""

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import Database
from shared.db.driver import (
    claim_sql,
    column_arrays,
    combined_sql,
    driver,
    insert_sql,
    update_sql,
)
from shared.db.engine import at_commit, begun
from shared.events.envelope import CONTENT_TYPE, CloudEvent, EventData, new_event
from shared.telemetry import current_trace_headers


@dataclass
class Tx:
    """An open transaction of one service: ``conn`` for its tables, ``emit`` for its events."""

    conn: AsyncConnection
    source: str
    outbox: Table
    inbox: Table
    cause: CloudEvent | None = None
    emitted: list[CloudEvent] = field(default_factory=list)
    # Shared by the copies that :meth:`caused_by` makes: one transaction, one of each.
    signals: set[str] = field(default_factory=set)
    committed: list[Callable[[], None]] = field(default_factory=list)
    unwritten: dict[tuple[Table, bool], list[dict[str, object]]] = field(default_factory=dict)
    unupdated: dict[tuple[Table, str, Any], dict[str, object]] = field(default_factory=dict)
    # The rows held for insertion (not ``skip_existing``), by table and primary key: an update
    # of one of them is folded into it (:meth:`update_later`).
    inserted: dict[tuple[Table, Any], dict[str, object]] = field(default_factory=dict)
    identity: dict[tuple[str, Any], Any] = field(default_factory=dict)
    """What repositories loaded (or created) in this transaction, by (kind, key); ``None``
    where a row is known not to exist."""

    def unknown(self, kind: str, keys: Iterable[Any]) -> list[Any]:
        """Those of ``keys`` that :attr:`identity` knows nothing of ``kind`` about, sorted (a
        batch loads and locks its rows in one order)."""
        return sorted({key for key in keys if (kind, key) not in self.identity})

    def remember(self, kind: str, keys: Iterable[Any], found: Mapping[Any, Any]) -> None:
        """Record in :attr:`identity` what was loaded for ``keys``: ``found[key]``, or None
        (known not to exist)."""
        for key in keys:
            self.identity[kind, key] = found.get(key)

    def signal(self, name: str) -> None:
        """Wake the loops registered for ``name`` (:meth:`UnitOfWork.on_commit`) once this
        transaction commits."""
        self.signals.add(name)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction commits, and not if it rolls back: a count
        of what it did (a batch rolled back and handled again one record at a time would
        count it twice)."""
        self.committed.append(callback)

    async def claim(self, key: str, topic: str) -> bool:
        """Record ``key`` as handled; False if it already was (a duplicate delivery)."""
        return (await self.claim_all([key], [topic]))[0]

    async def claim_all(self, keys: Sequence[str], topics: Sequence[str]) -> list[bool]:
        """:meth:`claim` for many keys (each of its topic) in one statement; a key repeated
        in ``keys`` is claimed by its first occurrence only."""
        first: dict[str, str] = {}
        for key, topic in zip(keys, topics, strict=True):
            first.setdefault(key, topic)
        raw = await driver(self.conn)  # usually the transaction's first statement: begins it
        rows = await raw.fetch(claim_sql(self.inbox), list(first), list(first.values()))
        new = {row[0] for row in rows}
        claimed = []
        for key in keys:
            claimed.append(key in new)
            new.discard(key)
        return claimed

    def caused_by(self, cause: CloudEvent) -> "Tx":
        """The same transaction, handling ``cause`` (one of several events handled in it).

        Every field but ``cause`` and ``emitted`` given by name (0.7 µs a record handled, where
        ``dataclasses.replace`` walked the fields for 1.3): a field added to :class:`Tx` is
        added here too, or each record handled would have one of its own (a test says so)."""
        return Tx(
            conn=self.conn,
            source=self.source,
            outbox=self.outbox,
            inbox=self.inbox,
            cause=cause,
            emitted=[],
            signals=self.signals,
            committed=self.committed,
            unwritten=self.unwritten,
            unupdated=self.unupdated,
            inserted=self.inserted,
            identity=self.identity,
        )

    async def emit(
        self,
        data: EventData,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        source: str | None = None,
        event_id: str | None = None,
    ) -> CloudEvent:
        """Add ``data`` as a CloudEvent to the outbox, caused by the event being handled.

        ``causation_id`` names the cause where it is not the event being handled: work done
        after the handler's transaction (a gateway call, a text sent) keeps the id of the
        event that asked for it, and names it here. ``source`` replaces the service's own
        where the event speaks for someone else (the platform adapter places orders as
        ``platform/<app>``). ``event_id`` is an id of the caller's making
        (:func:`shared.ids.answer_id`), where each repeat of the cause must make the same event.
        """
        order_id = getattr(data, "order_id", None)
        corr = correlation_id or order_id or (self.cause.correlationid if self.cause else None)
        event = new_event(
            data,
            source=source or self.source,
            correlation_id=corr,
            causation_id=causation_id or (self.cause.id if self.cause else None),
            event_id=event_id,
        )
        await self.emit_raw(
            data.topic.value,
            data.partition_key().encode(),
            event.to_json(),
            {"content-type": CONTENT_TYPE, **current_trace_headers()},
        )
        self.emitted.append(event)
        return event

    async def emit_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, str]
    ) -> None:
        """Add a record as it is (dead letters, redrives) to the outbox."""
        self.insert_later(
            self.outbox, {"topic": topic, "key": key, "value": value, "headers": dict(headers)}
        )
        self.signal(OUTBOX)

    def insert_later(
        self, table: Table, row: dict[str, object], *, skip_existing: bool = False
    ) -> None:
        """Insert ``row`` into ``table`` when the transaction is about to commit, with the
        table's other such rows in one statement and in the order given (serial ids ascend).
        Only for rows that nothing reads back before the commit (or :meth:`flush`).

        ``skip_existing``: a row whose key (or another unique column) is taken, by then or by
        an earlier row of the same statement, is not written (``ON CONFLICT DO NOTHING``);
        else the commit fails, with a unique violation that :func:`~shared.db.fault` sorts
        as a race lost (``Kind.RACE_LOST``): a consumer tries the record again, and says so
        in a warning."""
        self.unwritten.setdefault((table, skip_existing), []).append(row)
        key = _primary_key(table)
        if not skip_existing and key is not None and key in row:
            self.inserted[table, row[key]] = row

    def update_later(self, table: Table, key: str, row: dict[str, object]) -> None:
        """Set the columns of ``row`` on the row of ``table`` whose ``key`` column equals
        ``row[key]``, when the transaction is about to commit. Later calls for the same row
        win, and the row is written once (the other rows whose same columns change, in the
        same statement). Only for rows locked by this transaction that nothing reads back
        from the database before the commit (or :meth:`flush`).

        A row this transaction inserts (:meth:`insert_later`, not ``skip_existing``) by its
        primary key ``key``, with every column of ``row`` among its own, takes the values
        instead: written once, by its insert, with no update (a new version of the row, and
        an entry in each of its indexes, that the update would cost)."""
        held = self.inserted.get((table, row[key])) if key == _primary_key(table) else None
        if (
            held is not None
            and row.keys() <= held.keys()
            and (table, key, row[key]) not in self.unupdated
        ):
            held.update(row)
            return
        self.unupdated.setdefault((table, key, row[key]), {}).update(row)

    async def flush(self) -> None:
        """Write the rows held for the commit now: before reading them back in this
        transaction (the commit calls it too)."""
        if not self.unwritten and not self.unupdated:
            return
        writes: list[_Write] = []
        for (table, skip_existing), rows in self.unwritten.items():
            for columns, run in groupby(rows, key=_columns):  # in order: serial ids ascend
                sql = insert_sql(table, columns, skip_existing)
                writes.append((table, sql, column_arrays(table, columns, run)))
        self.unwritten.clear()
        self.inserted.clear()
        shapes: dict[tuple[Table, str, tuple[str, ...]], list[dict[str, object]]] = {}
        for (table, key, _), row in self.unupdated.items():
            changed = tuple(sorted(c for c in row if c != key))
            shapes.setdefault((table, key, changed), []).append(row)
        for (table, key, columns), rows in shapes.items():
            sql = update_sql(table, key, columns)
            writes.append((table, sql, column_arrays(table, (key, *columns), rows)))
        self.unupdated.clear()
        raw = await driver(self.conn)
        try:
            for part in _distinct_tables(writes):
                args = [array for _, _, arrays in part for array in arrays]
                await raw.execute(combined_sql(tuple(sql for _, sql, _ in part)), *args)
        except Exception as exc:
            at_commit(exc)  # a key taken by now is another transaction's: a race it lost
            raise


@cache
def _primary_key(table: Table) -> str | None:
    """The column of ``table``'s primary key, if it is one column."""
    columns = list(table.primary_key.columns)
    return columns[0].name if len(columns) == 1 else None


def _columns(row: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(row)


_Write = tuple[Table, str, list[list[Any]]]


def _distinct_tables(writes: list[_Write]) -> Iterator[list[_Write]]:
    """``writes`` in order, cut into runs that each write a table at most once: one statement
    per run (:func:`combined_sql`). A table written again (rows inserted, then some of them
    updated) starts a new run, so that the second write sees the first."""
    run: list[_Write] = []
    for write in writes:
        if any(table is write[0] for table, _, _ in run):
            yield run
            run = []
        run.append(write)
    if run:
        yield run


OUTBOX = "outbox"
"""The signal of a transaction that added outbox rows (the relay listens for it)."""


class UnitOfWork:
    """Opens :class:`Tx` transactions for one service; after each commit, calls back those
    registered for the signals it raised."""

    def __init__(self, db: Database, source: str, outbox: Table, inbox: Table) -> None:
        self.db = db
        self.source = source
        self.outbox = outbox
        self.inbox = inbox
        self._after_commit: defaultdict[str, list[Callable[[], None]]] = defaultdict(list)

    def on_commit(self, callback: Callable[[], None], signal: str = OUTBOX) -> None:
        """Call ``callback`` after each commit of a transaction that raised ``signal``."""
        self._after_commit[signal].append(callback)

    @asynccontextmanager
    async def begin(self, cause: CloudEvent | None = None) -> AsyncIterator[Tx]:
        async with begun(self.db.engine) as conn:
            tx = Tx(
                conn=conn, source=self.source, outbox=self.outbox, inbox=self.inbox, cause=cause
            )
            yield tx
            await tx.flush()
        for done in tx.committed:
            done()
        for signal in tx.signals:
            for callback in self._after_commit.get(signal, ()):
                callback()

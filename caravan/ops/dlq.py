"""Dead letters: reading them from the ``<topic>.dlq`` topics, sending chosen ones back, and
discarding those that should never go back.

A redriven record goes to its original topic with its original key and value (or a fixed
value), a header naming the dead letter it came from, one naming the consumer group that
dead-lettered it (the only group to handle it again) and the letter's trace context (the
record's trace goes on); each redrive is recorded, with the letters it sent, and a letter
sent once is not sent again unless asked. A discard sends nothing: it records, with its
reason, that the letters chosen are closed (junk nobody can mend), so that they no longer
wait for an operator; Kafka keeps them until the topic's retention deletes them, and a
redrive leaves them out unless asked, as it does those it sent.
"""

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.kafka_security import client_kwargs
from shared.messaging import kafka_admin
from shared.topics import Topic, consumer_group

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from shared.db.engine import Fault


@dataclass(frozen=True)
class Letter:
    """What identifies a dead letter: where it is kept, and when it came."""

    dlq_topic: str
    partition: int
    offset: int
    time: datetime

    @property
    def ref(self) -> str:
        return f"{self.dlq_topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class DeadLetter(Letter):
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def error(self) -> str:
        return self.headers.get("dlq.error", "?")

    @property
    def origin(self) -> str:
        return self.headers.get("dlq.topic", self.dlq_topic.removesuffix(".dlq"))

    @cached_property
    def source(self) -> str | None:
        """The ``source`` its record's envelope names (``storefront/shawan-center``: who sent
        it), or None where its value is not a JSON object naming one (not JSON, empty)."""
        try:
            event = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None
        source = event.get("source") if isinstance(event, dict) else None
        return source if isinstance(source, str) and source else None

    @property
    def redrive_of(self) -> str | None:
        """The dead letter this one's record was redriven from, if it was a redrive."""
        return self.headers.get("dlq.redriven-from")  # consumer.LETTER_REDRIVEN_FROM


def _dead_letter(r: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        r.topic,
        r.partition,
        r.offset,
        datetime.fromtimestamp(r.timestamp / 1000, UTC),
        r.key,
        r.value or b"",
        {k: (v or b"").decode("utf-8", "replace") for k, v in r.headers},
    )


def _letter(r: ConsumerRecord[bytes, bytes]) -> Letter:
    return Letter(r.topic, r.partition, r.offset, datetime.fromtimestamp(r.timestamp / 1000, UTC))


async def read(bootstrap: str, topics: list[str] | None = None) -> list[DeadLetter]:
    """Every dead letter now in the given dead-letter topics (all of them by default)."""
    letters, _ = await _scan(bootstrap, topics or [t.dlq for t in Topic], _dead_letter, {})
    return sorted(letters, key=lambda d: (d.time, d.ref))


@dataclass(frozen=True)
class _Span:
    """What :func:`_scan` read of a partition: from ``first`` to its end, the partition
    beginning at ``begin`` (retention deleted what was before)."""

    begin: int
    first: int


L = TypeVar("L", bound=Letter)


async def _scan(
    bootstrap: str,
    names: list[str],
    make: Callable[[ConsumerRecord[bytes, bytes]], L],
    after: Mapping[TopicPartition, L],
) -> tuple[list[L], dict[TopicPartition, _Span]]:
    """The letters of the partitions of the topics ``names`` as ``make`` makes them, each
    partition read from after the letter ``after`` has of it to its end: from its beginning
    where ``after`` has none, or the partition no longer holds its offset, or holds a letter
    newer than it there or before (its topic deleted and made again, as long since or
    longer: its offsets alone do not tell); and what was read of each partition.

    Every topic's offsets are asked for before any partition is assigned, and the topics
    holding letters are read together: an offset request made while the consumer fetches
    waits for the fetch's long poll, so reading the topics one after another took 1.5 s
    more for each topic after the first to hold letters."""
    letters: list[L] = []
    async with kafka_admin.group_client(bootstrap, "caravan-ops-dlq-reader") as consumer:
        tps = await kafka_admin.partitions_of(consumer, names)
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        held = {tp: d for tp, d in after.items() if tp in end and begin[tp] <= d.offset < end[tp]}
        first = {tp: held[tp].offset + 1 if tp in held else begin[tp] for tp in tps}
        if held:
            # A letter there newer than the one read, at its offset or before: the topic was
            # made again (its letters come one after another in time).
            later = {tp: round(d.time.timestamp() * 1000) + 1 for tp, d in held.items()}
            for tp, found in (await consumer.offsets_for_times(later)).items():
                if found is not None and found.offset <= held[tp].offset:
                    first[tp] = begin[tp]
        pending = {tp for tp in tps if end[tp] > first[tp]}
        if pending:
            consumer.assign(list(pending))
            # From its beginning as it is when read (retention moves it), all in one request:
            # each partition's own waited for an answer in turn.
            if whole := [tp for tp in pending if first[tp] <= begin[tp]]:  # none: all of them
                await consumer.seek_to_beginning(*whole)
            for tp in pending - set(whole):
                consumer.seek(tp, first[tp])
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for records in batch.values():
                letters += [make(r) for r in records]
            # Every partition, not only those that returned records: one whose first
            # letters retention deleted meanwhile may be at its end with none.
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
    return letters, {tp: _Span(begin[tp], first[tp]) for tp in tps}


class Kept:
    """The dead letters kept in the given dead-letter topics (every one by default), by what
    identifies them (no key, value or headers), for the operations page to count every
    ``DEAD_LETTERS_EVERY``: each :meth:`read` reads only the letters come since the one
    before, forgets those that retention deleted, and counts afresh a topic deleted and made
    again. The page read every letter kept, values and all, each time: a storm's 100,000
    letters twice a minute."""

    def __init__(self, topics: list[str] | None = None) -> None:
        self.topics = topics or [t.dlq for t in Topic]
        self._letters: dict[TopicPartition, list[Letter]] = {}

    async def read(self, bootstrap: str) -> list[Letter]:
        """Every dead letter now kept, as :func:`read` would find them."""
        last = {tp: kept[-1] for tp, kept in self._letters.items() if kept}
        new, spans = await _scan(bootstrap, self.topics, _letter, last)
        self._letters = {
            tp: [d for d in self._letters.get(tp, ()) if span.begin <= d.offset < span.first]
            for tp, span in spans.items()
        }
        for letter in new:
            self._letters[TopicPartition(letter.dlq_topic, letter.partition)].append(letter)
        letters = [d for kept in self._letters.values() for d in kept]
        return sorted(letters, key=lambda d: (d.time, d.ref))


def origin_topic(name: str) -> str:
    """The original topic that ``name`` chooses dead letters of: a Caravan topic, or its
    dead-letter topic (``orders.requests.v1.dlq``, as ``dlq list``'s ids and the operations
    page name it, chooses those of ``orders.requests.v1``). Any other name is a
    ``ValueError`` naming the topics that are: it chose none, which read as "0 dead
    letter(s)" with hundreds waiting."""
    for topic in Topic:
        if name in (topic.value, topic.dlq):
            return topic.value
    raise ValueError(
        f"no topic {name!r} has dead letters: name one of {', '.join(Topic)} (or its .dlq)"
    )


def select(
    letters: list[DeadLetter],
    *,
    topic: str | None = None,
    error: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
    refs: list[str] | None = None,
) -> list[DeadLetter]:
    """The dead letters matching every filter given (``topic`` is the original topic:
    :func:`origin_topic`; ``source`` the one its record's envelope names)."""
    return [
        d
        for d in letters
        if (topic is None or d.origin == topic)
        and (error is None or d.error == error)
        and (source is None or d.source == source)
        and (since is None or d.time >= since)
        and (refs is None or d.ref in refs)
    ]


@dataclass(frozen=True)
class Closed:
    """A letter an operator closed, as the audit trail has it: sent back by a redrive, or
    discarded (``discarded``: the reason given); when, and who ran it."""

    at: datetime
    by: str
    discarded: str | None = None  # a discard's reason; None: a redrive sent it
    fixed: bool = False  # a redrive that sent a fixed value (--value-file), not the letter's

    @property
    def said(self) -> str:
        """How ``dlq list`` and a redrive leaving it out say it: ``redriven AT`` or
        ``discarded AT``."""
        from caravan.output import at  # here: rich, not for the operations page

        return f"{'redriven' if self.discarded is None else 'discarded'} {at(self.at)}"


@dataclass(frozen=True)
class Redrive:
    sent: list[str]  # the letters sent (or, in a dry run, that would be)
    before: dict[str, Closed]  # letters left out: redriven or discarded before
    dropped: list[str] = field(default_factory=list)  # left out: their value was not kept
    unrecorded: str | None = None  # a dry run: why the audit trail did not record it
    # left out of an --again with no value: their last redrive sent a fixed value
    fixed: dict[str, Closed] = field(default_factory=dict)
    # sent (or would be) as they were, dead-lettered for their value: ref → its error
    unmended: dict[str, str] = field(default_factory=dict)
    # sent (or would be), requests answered order.rejected: ref → its source/order_ref
    rejected: dict[str, str] = field(default_factory=dict)


REQUEST_TOPICS = (Topic.ORDER_REQUESTS, Topic.PLATFORM_EVENTS)
"""Where the orders service reads the requests it places: the storefronts' and the platform
adapter's (``platform.order_requested``), each answered ``order.rejected`` when dead-lettered."""


def rejected_request(letter: DeadLetter) -> str | None:
    """The request (``source/order_ref``) of ``letter`` that the orders service answered
    ``order.rejected`` when it dead-lettered it (``services.orders.handlers.answered_rejected``),
    or None. A redrive that places its order has its source see ``order.placed`` and the
    order's outcome after that rejection (CONTRACT.md: a rejected request created no order)."""
    from services.orders.handlers import answered_rejected  # here: not for `caravan dlq list`

    by_orders = letter.headers.get("dlq.group") == consumer_group("orders")
    if letter.origin not in REQUEST_TOPICS or not by_orders:
        return None
    try:
        event = orjson.loads(letter.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not answered_rejected(str(event.get("type")), letter.error):
        return None
    data = event.get("data")
    ref = data.get("order_ref") if isinstance(data, dict) else None
    return f"{event.get('source')}/{ref}"


async def closed(
    database_url: str | None, letters: Sequence[Letter]
) -> tuple[dict[str, Closed], "Fault | None"]:
    """Which of ``letters`` a redrive sent or a discard closed before (:func:`closed_before`),
    or none and why the audit trail cannot tell now (PostgreSQL down, never migrated, none
    named): what ``dlq list`` shows, what ``dlq redrive`` and ``dlq discard`` leave out, and
    what the operations page does not count waiting."""
    from caravan.ops.record import trail  # here: `caravan dlq list` with no letter

    async with trail(database_url) as engine:
        return await _closed(engine, letters)


async def _closed(
    engine: "AsyncEngine | None", letters: Sequence[Letter]
) -> tuple[dict[str, Closed], "Fault | None"]:
    """:func:`closed`, asked through ``engine`` (:func:`caravan.ops.record.trail`)."""
    from caravan.ops.record import unrecordable

    why = await unrecordable(engine)
    if why is not None or engine is None:
        return {}, why
    return await closed_before(engine, letters), None


CLOSING = ("redrive", "discard")
"""The audit trail's actions that close a dead letter: it no longer waits for an operator."""


async def closed_before(engine: "AsyncEngine", letters: Sequence[Letter]) -> dict[str, Closed]:
    """The ``letters`` that a redrive sent or a discard closed before, each with when and by
    whom, and a discard's reason (from the audit trail; one older than a letter was of another
    letter with its id, on a dead-letter topic made again since; of several, the last)."""
    return dict(await _closings(engine, letters))


async def fixed_before(engine: "AsyncEngine", letters: Sequence[Letter]) -> dict[str, Closed]:
    """The ``letters`` whose last redrive sent a fixed value (``--value-file``) in place of
    theirs: sent again as they are, they go back unfixed (the trail keeps no value to send)."""
    last = {ref: c for ref, c in await _closings(engine, letters) if c.discarded is None}
    return {ref: c for ref, c in last.items() if c.fixed}


async def _closings(engine: "AsyncEngine", letters: Sequence[Letter]) -> list[tuple[str, Closed]]:
    """Each redrive and discard of ``letters`` in the audit trail, the oldest first (those
    older than a letter left out: :func:`closed_before`)."""
    from sqlalchemy import select as sa_select  # here: not for `caravan dlq list` of none

    from shared.auth.tables import audit

    chosen, detail = audit.c.detail["letters"], audit.c.detail
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa_select(
                audit.c.at,
                audit.c.actor,
                audit.c.action,
                detail["reason"],
                detail["replaced_value"],
                chosen,
            )
            .where(
                audit.c.action.in_(CLOSING),
                audit.c.detail["dry_run"].as_boolean().is_(False),
                chosen.as_string().is_not(None),  # a JSON array
            )
            .order_by(audit.c.at)
        )
        wanted = {d.ref: d.time for d in letters}
        return [
            (
                ref,
                Closed(
                    at,
                    actor,
                    str(reason or "") if action == "discard" else None,
                    action == "redrive" and replaced is True,
                ),
            )
            for at, actor, action, reason, replaced, refs in rows
            for ref in refs or ()
            if ref in wanted and at >= wanted[ref]
        ]


async def redrive(
    bootstrap: str,
    database_url: str | None,
    letters: list[DeadLetter],
    *,
    value: bytes | None = None,
    dry_run: bool = False,
    again: bool = False,
    on_sent: Callable[[str], None] = lambda ref: None,
) -> Redrive:
    """Send ``letters`` back to their original topics, each for the consumer group that
    dead-lettered it; ``value`` replaces the value (one letter). A letter redriven or discarded
    before is left out unless ``again``; one whose value was too big to keep, unless ``value``;
    and, ``again`` without ``value``, one whose last redrive sent a fixed value
    (:func:`fixed_before`: its own value would go back unfixed, dead-lettered again after what
    the fixed one did).
    ``on_sent`` hears of each letter once Kafka has it; the audit trail records what was
    sent, even when a send fails part of the way, and a redrive it cannot record is refused
    (:class:`Unrecordable`) before anything is sent. A dry run reads only Kafka: without the
    trail (a PostgreSQL outage, no database named) it goes on, unrecorded, and leaves out no
    letter for having been closed before (the trail says which were)."""
    # here: `caravan dlq list` needs none of these
    from caravan.ops.record import Unrecordable, record, trail, unrecordable
    from shared.events.registry import IN_THE_VALUE
    from shared.messaging.consumer import REDRIVE_GROUP, REDRIVEN_FROM, VALUE_DROPPED
    from shared.telemetry import trace_headers_of

    if value is not None and len(letters) != 1:
        raise ValueError("a replacement value applies to exactly one dead letter")
    async with trail(database_url) as engine:
        before: dict[str, Closed] = {}
        fixed: dict[str, Closed] = {}
        if again:  # which were closed before matters not: whether it can be recorded, and fixes
            unrecorded = await unrecordable(engine)
            if value is None and unrecorded is None and engine is not None:
                fixed = await fixed_before(engine, letters)
        else:
            before, unrecorded = await _closed(engine, letters)
        if unrecorded is not None and not dry_run:
            raise Unrecordable(unrecorded)
        dropped = [d.ref for d in letters if value is None and VALUE_DROPPED in d.headers]
        left_out = {*before, *dropped, *fixed}
        todo = [d for d in letters if d.ref not in left_out]
        sent = [d.ref for d in todo] if dry_run else []
        unmended: dict[str, str] = {
            d.ref: d.error for d in todo if value is None and d.error in IN_THE_VALUE
        }
        rejected = {d.ref: request for d in todo if (request := rejected_request(d)) is not None}
        try:
            if not dry_run and todo:
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    **client_kwargs(),
                )
                try:  # closed, started or not (one that failed to start is still open)
                    await producer.start()
                    for d in todo:
                        headers = [(REDRIVEN_FROM, d.ref.encode())]
                        if "dlq.group" in d.headers:
                            headers.append((REDRIVE_GROUP, d.headers["dlq.group"].encode()))
                        trace = trace_headers_of(d.headers)  # the record's trace, continued
                        headers += [(name, value.encode()) for name, value in trace.items()]
                        await producer.send_and_wait(
                            d.origin,
                            value if value is not None else d.value,
                            key=d.key,
                            headers=headers,
                        )
                        sent.append(d.ref)
                        on_sent(d.ref)
                finally:
                    await producer.stop()
        finally:
            if (sent or not todo or dry_run) and engine is not None and unrecorded is None:
                await record(
                    engine,
                    "redrive",
                    dry_run,
                    ", ".join(sorted({d.origin for d in letters})),
                    {
                        "letters": sent,
                        # left out: those sent back before apart from those discarded
                        "redriven_before": sorted(
                            r for r, c in before.items() if c.discarded is None
                        ),
                        "discarded_before": sorted(
                            r for r, c in before.items() if c.discarded is not None
                        ),
                        "fixed_before": sorted(fixed),  # left out: sent fixed, none given now
                        "replaced_value": value is not None,
                        **(
                            {"value": value_change(letters[0].value, value)}
                            if value is not None
                            else {}
                        ),
                    },
                )
        why = None if unrecorded is None else str(unrecorded)
        return Redrive(sent, before, dropped, why, fixed, unmended, rejected)


@dataclass(frozen=True)
class Discard:
    discarded: list[str]  # the letters closed (or, in a dry run, that would be)
    before: dict[str, Closed]  # letters left out: redriven or discarded before
    unrecorded: str | None = None  # a dry run: why the audit trail did not record it


async def discard(
    database_url: str | None, letters: list[DeadLetter], *, reason: str, dry_run: bool = False
) -> Discard:
    """Close ``letters`` for ``reason``: the audit trail records them discarded, and from then
    on they wait for nobody (``dlq list`` says so, the operations page counts them apart, a
    redrive leaves them out unless asked); nothing is sent, and Kafka keeps them until the
    topic's retention deletes them. A letter redriven or discarded before is left out. A
    discard the trail cannot record is refused (:class:`Unrecordable`); a dry run goes on
    without it, unrecorded, and leaves out no letter (the trail says which were closed)."""
    from caravan.ops.record import Unrecordable, record, trail  # not for `caravan dlq list`

    if not reason.strip():
        raise ValueError("say why these letters are discarded (--reason)")
    async with trail(database_url) as engine:
        before, unrecorded = await _closed(engine, letters)
        if unrecorded is not None and not dry_run:
            raise Unrecordable(unrecorded)
        todo = [d.ref for d in letters if d.ref not in before]
        if engine is not None and unrecorded is None:
            await record(
                engine,
                "discard",
                dry_run,
                ", ".join(sorted({d.origin for d in letters})),
                {"letters": todo, "closed_before": sorted(before), "reason": reason},
            )
        return Discard(todo, before, None if unrecorded is None else str(unrecorded))


WHOLE_VALUE = "whole value replaced"
"""What a replacement changed of a value that is not JSON (or by one that is not)."""


def value_change(original: bytes, sent: bytes) -> dict[str, Any]:
    """What a redrive's replacement value changed, for the audit trail, without what either
    value holds (a buyer's phone, address): the SHA-256 of each, and the JSON paths whose
    values differ (:func:`differing_paths`), or :data:`WHOLE_VALUE` where either is not JSON."""
    try:
        changed: list[str] | str = differing_paths(orjson.loads(original), orjson.loads(sent))
    except orjson.JSONDecodeError:
        changed = WHOLE_VALUE
    return {
        "before_sha256": hashlib.sha256(original).hexdigest(),
        "after_sha256": hashlib.sha256(sent).hexdigest(),
        "changed": changed,
    }


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A member name a JSONPath writes after a dot; any other is written quoted in brackets."""


def differing_paths(before: Any, after: Any, path: str = "$") -> list[str]:
    """The JSONPaths (``$.data.buyer.phone``, ``$.data.lines[0]``) where two JSON values
    differ: a member or item added, removed or holding another value (``1`` and ``1.0``, or
    ``1`` and ``true``, are other values); none if they are the same."""
    pairs: list[tuple[str, Any, Any]]
    if isinstance(before, dict) and isinstance(after, dict):
        pairs = [
            (
                f"{path}.{key}" if NAME.fullmatch(key) else f"{path}[{orjson.dumps(key).decode()}]",
                before.get(key, MISSING),
                after.get(key, MISSING),
            )
            for key in sorted(before.keys() | after.keys())
        ]
    elif isinstance(before, list) and isinstance(after, list):
        pairs = [
            (
                f"{path}[{i}]",
                before[i] if i < len(before) else MISSING,
                after[i] if i < len(after) else MISSING,
            )
            for i in range(max(len(before), len(after)))
        ]
    else:
        return [] if type(before) is type(after) and before == after else [path]
    return [found for at, was, now in pairs for found in differing_paths(was, now, at)]


MISSING = object()
"""A member or item one of two JSON values has not (no JSON value is it)."""


__all__ = [
    "Closed",
    "DeadLetter",
    "Discard",
    "Kept",
    "Letter",
    "Redrive",
    "closed",
    "closed_before",
    "differing_paths",
    "discard",
    "fixed_before",
    "read",
    "redrive",
    "rejected_request",
    "select",
    "value_change",
]

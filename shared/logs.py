"""JSON logs with the service name, and the order id and event type of the work in hand.

A log line never holds a buyer's phone number (docs/security.md): every number written in
E.164 (``+8613912345678``, grouped ``+44 7700 900123``, or ``%2B8613912345678`` in a URL's
path), and a mainland China mobile number as platforms, forms and operators write it (bare,
grouped, in full-width digits), unless a word names it a platform's id (:data:`_CN_MOBILE`,
:data:`_BARE`, :data:`_ID`), is masked by the formatter, whichever code logged it; a number
known to be a phone but malformed is masked where it is logged, with :func:`masked`. Nor
does it hold a URL's credentials: the HTTP clients' own request lines (httpx, with each URL
in full) are turned down."""

import asyncio
import contextvars
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from shared.api import SERVICE_LOOP_LATE, plural
from shared.loop_lag import held_through
from shared.telemetry import SERVICE, continuing, current_ids

_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)
_event_type: contextvars.ContextVar[str | None] = contextvars.ContextVar("event", default=None)
_order_ref: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_ref", default=None)
_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


_E164 = r"(?:\+|%2[Bb])[1-9](?:(?:[ -]?[0-9]){6,14}(?![0-9])|[0-9]{6,14})"
"""E.164: ``+``, then 7 to 15 digits, written together (``+442071838750``) or grouped by
single spaces or dashes (``+44 7700 900123``, ``+1 415-555-0100``), a grouped one ending where
its digits do (so that digits after it, a date's, are not taken into a longer match)."""
_D = "[0-9０-９]"  # a digit, ASCII or full-width (１３８..., as a Chinese form may send it)
_HEAD = rf"[1１][3-9３-９]{_D}"  # a mainland mobile number's first three digits
_DOTTED = rf"{_HEAD}\.{_D}{{4}}\.{_D}{{4}}"  # 138.0013.8000
_BRACKETED = rf"[(（]{_HEAD}[)）]"  # (138), or （138） as a Chinese keyboard writes it
# grouped: 138 0013 8000, 139 1234-5678, (138) 0013 8000, 138.0013.8000, (138) 0013.8000
_GROUPED = rf"(?:{_HEAD}[ -]|{_BRACKETED}[ .-]?){_D}{{4}}[ .-]{_D}{{4}}|{_DOTTED}"
# after a calling code or a word naming a phone: grouped or not (13800138000)
_MOBILE = rf"(?:{_HEAD}|{_BRACKETED})[ .-]?{_D}{{4}}[ .-]?{_D}{{4}}|{_DOTTED}"
_CC = r"(?:[+＋]|%2[Bb]|[0０]{2})[8８][6６]\)?[ .-]?|[8８][6６][ -]"  # +86 (or (+86)), 0086, 86
_CN_MOBILE = (
    rf"(?<![0-9０-９A-Za-z_.-])(?:(?:{_CC})(?:{_MOBILE})|{_GROUPED})"
    r"(?![0-9０-９A-Za-z_-])"
)
"""A mainland China mobile number, nationally or after 86, as it is told from the ids a line
holds (order refs and platform order ids or SKUs are digit runs too, such as a Taobao item's
11-digit id; UUIDs, timestamps, amounts in fen): by its calling code (``+86``, ``(+86)``,
``0086``, or a bare ``86`` set apart by a space or dash) or its grouping (``138 0013 8000``,
``(138) 0013 8000``, ``138.0013.8000``), in ASCII or full-width digits, and not within a
longer run of digits, letters or dashes (``LOT-138-0013-8000``). A bare run of 11 digits
(or 86 and 11) is one too (:data:`_BARE`), unless a word names it an id (:data:`_ID`)."""
_KEYED = (
    r"(?P<key>(?i:phone|mobile|tel|手机|电话)[^0-9A-Za-z\n]{0,4})"
    rf"(?P<number>(?:{_CC}|[8８][6６])?(?:{_MOBILE}))(?![0-9０-９])"
)
"""A mobile number that a word names as a phone (``"phone": "13800138000"``,
``receiver_mobile=...``, ``手机：...``), the word kept: bare (``8613800138000``) or written as
after a calling code (``tel(139) 0000-0001``, ``Tel.139.0000.0001``, ``TEL-139-0000-0001``),
glued to the word and to letters after it (``tel13900000001ext``), where a grouped number
alone, so glued, is taken for an id's part (``LOT-138-0013-8000``)."""
_BARE = (
    rf"(?P<bare>(?<![0-9０-９A-Za-z])(?<!{_D}\.)(?:[8８][6６])?{_HEAD}{_D}{{8}}"
    rf"(?![0-9０-９A-Za-z]|\.{_D}))"
)
"""Any other bare mobile number (``input_value='13800138000'`` in a pydantic error, a gateway
echoing ``"to": "8613800138000"``, a path ``/opt-outs/13800138000``), glued to a ``_``, ``.``
or ``-`` or not (``buyer_13800138000``, at a sentence's end), but not within a longer run of
digits or letters, nor a decimal number's (``0.13800138000``), unless a word names it an id
(:data:`_ID`); an id that is not so named is masked with it."""
_ID = re.compile(
    r"(?<![0-9A-Za-z])(?i:n?iid|num_iid|tid|oid|skus?|(?:sku|item|order)_(?:id|ref)|order|item)"
    r"[^0-9A-Za-z\n]{0,4}(?:[A-Za-z]{1,8}[-_])?\Z"
)
"""The end of a text before a bare number that names it a platform's id (Taobao's
``num_iid=``, ``tid=``, ``oid=``, ``sku_id``, ``platform SKU '...'``, ``order ...``, also with
a storefront's prefix to the digits, ``order SWN-...``), which is kept as it is: a Taobao
item's id may be 11 digits starting ``1[3-9]``. Looked for only before a number found
(:func:`_masked`), not at every place of every line."""
_PHONE = re.compile(f"{_E164}|{_CN_MOBILE}|{_KEYED}|{_BARE}")
_E164_ALONE = re.compile(_E164)
_MOBILE_DIGITS = re.compile(r"1[3-9][0-9][)）]?[ .-]?[0-9]{4}[ .-]?[0-9]{4}(?![0-9])")
"""E.164 alone, for a text holding no mobile number's digits (:data:`_MOBILE_DIGITS`, in ASCII,
nor a full-width ``１``): :data:`_PHONE` is tried only on one that does (it took ten times as
long as E.164 alone, some 15 µs more on every log line, a timestamp's or an id's digits or
none). Full-width digits in :data:`_MOBILE_DIGITS` made it up to ten times slower (its first
digit no longer the ASCII ``1`` alone): ``"１" in text`` costs next to nothing."""


def masked(phone: str) -> str:
    """``phone`` as log lines show it: its first three characters (the calling code, for
    most numbers) and the last four, the rest starred (``+86*******5678``); a string too
    short to keep a part of comes out all stars."""
    if len(phone) < 9:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def phones_masked(text: str) -> str:
    """``text`` with every phone number in it :func:`masked`: E.164, and a mainland China
    mobile number as :data:`_CN_MOBILE`, :data:`_KEYED` and :data:`_BARE` tell one (not an
    id, :data:`_ID`)."""
    if _MOBILE_DIGITS.search(text) is None and "１" not in text:
        return _E164_ALONE.sub(_masked, text)
    return _PHONE.sub(_masked, text)


def _masked(found: re.Match[str]) -> str:
    if found.re is _E164_ALONE or found.group("number", "bare") == (None, None):
        return masked(found.group())
    if found.group("bare") is not None:
        named = _ID.search(found.string, max(0, found.start() - 16), found.start())
        return found.group() if named else masked(found.group())
    return found.group("key") + masked(found.group("number"))


class JsonFormatter(logging.Formatter):
    """A log record as a JSON line; ``instance`` (``CARAVAN_INSTANCE_ID``), where given, tells
    apart the lines of two instances of one service."""

    def __init__(self, service: str, instance: str | None = None) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": SERVICE.get() or self.service,
        }
        if self.instance is not None:
            entry["instance"] = self.instance
        entry["logger"] = record.name
        entry["message"] = phones_masked(record.getMessage())
        if (order_id := _order_id.get()) is not None:
            entry["order_id"] = order_id
        if (order_ref := _order_ref.get()) is not None:
            entry["order_ref"] = order_ref
        if (correlation := _correlation.get()) is not None:
            entry["correlation_id"] = correlation
        if (event := _event_type.get()) is not None:
            entry["event"] = event
        if (ids := current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = phones_masked(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


# aiokafka's lines (0.14's words) that say no more than that a broker cannot be reached: it
# logs most at the error level, and again at each retry, a hundred a second in an outage.
KAFKA_UNREACHABLE = frozenset(
    {
        'Unable connect to "%s:%s": %s',
        'Unable to request metadata from "%s:%s": %s',
        "Unable to request metadata from node with id %s: %r",
        "Unable to update metadata from %s",
        "Unable connect to node with id %s: %s",
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "Marking the coordinator dead (node %s)for group %s.",
        "Group Coordinator Request failed: %s",
        "Heartbeat send request failed: %s. Will retry.",
        "Heartbeat session expired - marking coordinator dead",
        "Failed fetch messages from %s: %s",
        "Failed fetch offsets from %s: %s",
        "Got error produce response: %s",  # a warning: NodeNotReadyError, ten a second
    }
)


# aiokafka's lines (0.14's words) that a partition's leader or the group's coordinator is not
# (yet) the broker asked: a broker just back from a restart, loading its partitions and groups
# (a drill's kill -9 of Kafka for 80 s: 14 to 27 NotLeaderForPartitionError sends and 8 to 12
# heartbeats per service, all within 3 s of its return), or leadership moved. aiokafka looks the
# new one up and retries (only a retriable error is said so): part of the outage before it, and
# said as one (once a minute) when they go on by themselves, leadership never settling.
KAFKA_MOVING = frozenset(
    {
        "Got error produce response on topic-partition %s, retrying. Error: %s",
        "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid",
    }
)


# aiokafka's line (0.14's words) that a commit of offsets was refused because the group went on
# without this member (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError):
# an instance away past its session (frozen, paused, cut off) is fenced so, as it is to be, and
# rejoins; the records it handled and could not commit are handled again by their next owner,
# whose inbox drops them. aiokafka logs it as an error, though no bug of ours.
KAFKA_FENCED = frozenset({"OffsetCommit failed for group %s due to group error (%s), will rejoin"})


# The OTLP exporter's lines (opentelemetry-exporter-otlp-proto-http 1.45's words) that say no
# more than that the collector does not answer: a warning at each retry and an error at each
# batch given up on (one every ten seconds while spans are made), then a stop's; or that it
# refused a batch (an HTTP 4xx: a 400, a 401 for headers it does not take, a 413 over its
# limit), an error at each batch (five a second while spans are made). Neither is a fault of
# the service's, nor stops its work: the spans alone are lost, until the collector is mended.
REFUSED_BATCH = "Failed to export %s batch code: %s, reason: %s"
COLLECTOR_FAILING = frozenset(
    {
        "Transient error %s encountered while exporting %s batch, retrying in %.2fs.",
        "Failed to export %s batch due to timeout, max retries or shutdown.",
        "Shutdown in progress, aborting retry.",
        REFUSED_BATCH,
    }
)
COLLECTOR_AWAY = (
    "; the OTLP collector does not answer: this service's spans are lost until it does (its"
    " work goes on). Check the collector and OTEL_EXPORTER_OTLP_ENDPOINT; said once, and once"
    " more when it is back"
)
COLLECTOR_REFUSES = (
    "; the OTLP collector refuses the spans: they are lost until it takes them (this service's"
    " work goes on). Check the collector's configuration and OTEL_EXPORTER_OTLP_HEADERS; said"
    " once, and once when it takes them again"
)


@dataclass
class Spell:
    """An outage (or a retried fault) as :class:`Outage` has seen it so far: when its first
    line came (``began``), its last line said (``said``) and its last line, said or not
    (``seen``), and how many lines were not said since the last said (``held``)."""

    began: float
    said: float
    seen: float
    held: int = 0
    counted: int = 0  # what the lines not said counted (:func:`retried`'s ``counted``)
    answered: float | None = None  # when it was told over (:meth:`Outage.over`), if it was
    settle: float = 0.0  # seconds after that within which, met again, it goes on
    told: float | None = None  # when its end was last said (:meth:`Outage.over` returned it)


class Outage(logging.Filter):
    """Makes the lines that tell of a fault retried meanwhile (a server that cannot be
    reached: a client's ``lines``, logged by loggers under ``source``; :meth:`key` tells
    which fault) a warning, said once and then at most once every ``every`` seconds while
    they go on, saying how many were not said since and how long ago the first came
    (docs/operations.md: a fault is a warning, an error a bug), none when ``level`` is above
    warnings; other lines pass as they are. A fault whose lines stopped for ``quiet``
    seconds is over, and so is one that :meth:`over` is told of: the next one is said at
    once, unless it comes within the ``settle`` seconds :meth:`over` was given, and is then
    the same outage going on (held as its lines were, its next end measured from its first
    line)."""

    source = ""
    lines: frozenset[str] = frozenset()

    def __init__(
        self,
        level: int = logging.NOTSET,
        every: float = 60.0,
        quiet: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.level = level
        self.every = every
        self.quiet = quiet
        self.clock = clock
        self._spells: dict[str, Spell] = {}

    def key(self, record: logging.LogRecord) -> str | None:
        """The fault ``record`` tells of, if it is one of its lines."""
        if record.name.startswith(self.source) and record.msg in self.lines:
            return self.source
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        key = self.key(record)
        if key is None:
            return True
        if self.level > logging.WARNING:
            return False
        now = self.clock()
        spell = self._spells.get(key)
        if spell is not None and spell.answered is not None and now - spell.answered < spell.settle:
            spell.answered = None  # the same outage, going on
        if spell is None or spell.answered is not None or now - spell.seen >= self.quiet:
            self._spells[key] = Spell(began=now, said=now, seen=now)
        elif now - spell.said < self.every:
            spell.seen, spell.held = now, spell.held + 1
            spell.counted += getattr(record, COUNTED, (0, ""))[0]
            return False
        else:
            held, since = spell.held, now - spell.began
            unit = getattr(record, COUNTED, (0, ""))[1]
            in_them = f", {spell.counted} {unit} in them" if unit and held else ""
            spell.seen, spell.said, spell.held, spell.counted = now, now, 0, 0
            record.msg = (
                f"{record.msg} ({held} more like it not logged{in_them};"
                f" the first {since:.0f} s ago)"
            )
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True

    def over(self, key: str | None = None, settle: float = 0.0) -> Spell | None:
        """The server answers again (told by its client's user): the outage of ``key``
        (:attr:`source` unless said) that had been seen, if any, now ended, to be said; unless
        it is met again within ``settle`` seconds, when it goes on. The end of an outage gone
        on so is said again only ``settle`` seconds or more after it was last said (None
        before): a broker back from a restart fails a few more requests as it loads, and one
        process said "Kafka answers again" three times in 213 ms."""
        spell = self._spells.get(self.source if key is None else key)
        if spell is None or spell.answered is not None:
            return None
        now = self.clock()
        spell.answered, spell.settle = now, settle
        if spell.told is not None and now - spell.told < settle:
            return None  # its warnings not said yet are counted on, for the end said next
        ended = replace(spell)
        spell.told, spell.held, spell.counted = now, 0, 0
        return ended


class KafkaOutage(Outage):
    """aiokafka's lines that a broker cannot be reached, and those that a leader or the
    coordinator is not yet the broker asked (:data:`KAFKA_MOVING`), which follow a broker's
    return: one outage, a broker's restart said once. aiokafka tries a broker again within
    a second, and says nothing above debug once it connects and finds the leaders, so ten
    seconds without a line end an outage."""

    source = "aiokafka"
    lines = KAFKA_UNREACHABLE | KAFKA_MOVING


class KafkaFenced(Outage):
    """aiokafka's line that this member was fenced from its group (:data:`KAFKA_FENCED`): a
    warning, said as a fault retried meanwhile is, since it rejoins by itself."""

    source = "aiokafka"
    lines = KAFKA_FENCED


class CollectorOutage(Outage):
    """The OTLP exporter's lines that the collector does not answer or refuses the spans:
    said once an outage, which ends when the exporter next delivers
    (:class:`shared.collector.CollectorExporter` tells :meth:`over`), not after a quiet spell
    (a service making no spans tries nothing)."""

    source = "opentelemetry.exporter.otlp"
    lines = COLLECTOR_FAILING

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level, every=math.inf, quiet=math.inf)

    def filter(self, record: logging.LogRecord) -> bool:
        """The exporter's words, and what they mean for the operator reading the one line."""
        said = super().filter(record)
        if said and self.key(record) is not None:
            meaning = COLLECTOR_REFUSES if record.msg == REFUSED_BATCH else COLLECTOR_AWAY
            record.msg = f"{record.msg}{meaning}"
        return said


# The process's, one for its exporters and its log handler both.
COLLECTOR_OUTAGE = CollectorOutage()


class Faults(Outage):
    """A retried fault's warnings, logged with ``extra=``:func:`retried` (PostgreSQL away,
    met by every loop and request of the process at each retry: hundreds a minute in an
    outage): each fault said once, then at most once a minute while it lasts. A fault that
    has not been met for a minute is over, and so is one that :meth:`over` is told of (a
    connection to PostgreSQL made again: :func:`shared.db.engine.async_engine`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(quiet=60.0, clock=clock)

    def key(self, record: logging.LogRecord) -> str | None:
        fault = getattr(record, FAULT, None)
        return fault if isinstance(fault, str) else None

    def filter(self, record: logging.LogRecord) -> bool:
        """A fault's warning, said as :class:`Outage` says it. A line of a fault above
        warnings (one gone on too long to pass by itself, a bug: :func:`shared.db.log_retry`'s
        race lost round after round) is said each time, at its level, and the fault goes on
        (:meth:`lasted`)."""
        key = self.key(record)
        if key is None or record.levelno <= logging.WARNING:
            return super().filter(record)
        spell = self._spells.get(key)
        if spell is not None:
            spell.seen = self.clock()
        return True

    def lasted(self, key: str) -> float:
        """How long the fault ``key`` has gone on, since its first line, each of its lines
        within a minute of the one before; 0 if it is not going on."""
        spell, now = self._spells.get(key), self.clock()
        if spell is None or spell.answered is not None or now - spell.seen >= self.quiet:
            return 0.0
        return now - spell.began


FAULT = "fault"
"""A record's attribute naming the retried fault it tells of (:func:`retried`)."""
COUNTED = "fault_counted"
"""A record's attribute saying how many of what its line counts (:func:`retried`)."""


def retried(fault: str, counted: tuple[int, str] | None = None) -> dict[str, Any]:
    """``extra`` for a warning of ``fault`` (its words, the same for each line of it), that
    will be tried again: said as :class:`Faults` says. ``counted`` (how many, of what): what
    the line counts (orders expired), which the line said after lines not said adds up over
    them (``(30 more like it not logged, 412 orders in them; ...)``): the lines not said are
    not the things they counted."""
    return {FAULT: fault} if counted is None else {FAULT: fault, COUNTED: counted}


# The process's, one for its log handler and for what tells that a fault is over.
FAULTS = Faults()


def answers_again(logger: logging.Logger, fault: str, what: str, settle: float = 0.0) -> None:
    """``what`` (PostgreSQL at its address, the payment gateway) answered: its ``fault``, if
    it had been met, is over (:meth:`Faults.over`: the next is said at once, unless met
    within ``settle`` seconds: the same outage going on), and that is said in one info line,
    with how long it lasted since its first line and how many of its warnings were not
    logged; where the process's own event loop ran as late meanwhile (:func:`held_through`),
    that the process itself was not running, not ``what`` away: a service thawed after a
    minute's ``kill -STOP`` said "Kafka answers again", blaming Kafka for its own freeze (its
    requests timed out by its clock as it ran again)."""
    spell = FAULTS.over(fault, settle)
    if spell is None:
        return
    lasted = FAULTS.clock() - spell.began
    late = held_through(lasted)
    held = f" ({plural(spell.held, 'warning')} of it not logged since the last that was)"
    if late is None:
        logger.info("%s answers again, %.0f s after it was first found away%s", what, lasted, held)
        return
    logger.info(
        "%s answers again, %.0f s after it was first found away: the process itself was not"
        " running (%s %.0f s late: stopped, swapped out or short of CPU), not %s away%s",
        what,
        lasted,
        SERVICE_LOOP_LATE,
        late,
        what,
        held,
    )


@dataclass
class _Window:
    began: float
    summary: Callable[[int, int], str]
    count: int = 0
    most: int = 0
    timer: asyncio.TimerHandle | None = None


class Burst:
    """Warnings of one thing met many times at once (pushes turned away in a sale: 290 in a
    few seconds), logged as two lines, not one each: the first of a burst at once; the
    others met within ``window`` seconds of it counted, and logged as one line when the
    window closes (or, with no event loop running, at the next one met after it). That line
    is ``summary(count, most)``: how many were met after the first, and the most ``most``
    that any of them (or the first) was given. A metric, not this, counts each one."""

    def __init__(
        self,
        logger: logging.Logger,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window = window
        self.clock = clock
        self._open: dict[str, _Window] = {}

    def met(
        self,
        key: str,
        first: str,
        summary: Callable[[int, int], str],
        most: int = 0,
    ) -> None:
        """One more of ``key``: ``first`` logged if it opens a burst, else counted."""
        now = self.clock()
        window = self._open.get(key)
        if window is not None and now - window.began < self.window:
            window.count += 1
            window.most = max(window.most, most)
            return
        if window is not None:
            self.close(key)
        self.logger.warning(first)
        window = self._open[key] = _Window(now, summary, most=most)
        with suppress(RuntimeError):  # no loop running: closed by the next one
            # In a context of its own: the summary is no line of the first one's trace.
            later = asyncio.get_running_loop().call_later
            window.timer = later(self.window, self.close, key, context=contextvars.Context())

    def close(self, key: str) -> None:
        """The burst of ``key`` over: what it counted logged in one line, if anything."""
        window = self._open.pop(key, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if window.count:
            self.logger.warning(window.summary(window.count, window.most))


def configure_logging(service: str, level: str = "INFO", instance: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance))
    handler.addFilter(KafkaOutage(level=logging.getLevelName(level)))
    handler.addFilter(KafkaFenced(level=logging.getLevelName(level)))
    COLLECTOR_OUTAGE.level = logging.getLevelName(level)
    handler.addFilter(COLLECTOR_OUTAGE)
    handler.addFilter(FAULTS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request's URL at INFO, with any credentials in it (a gateway URL may
    # carry its key: https://merchant:KEY@gw/...).
    quieter = max(logging.getLevelName(level), logging.WARNING)
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(quieter)


@contextmanager
def bind_order(
    order_id: str | None,
    event_type: str | None = None,
    order_ref: str | None = None,
    correlation_id: str | None = None,
) -> Iterator[None]:
    """Tag every log line inside the block with the order id (and event type; and the
    storefront's order ref, for a request not yet known as an order: :func:`order_known`
    adds its id once the handler has it; and a correlation id that names no order, a
    request's or its rejection's)."""
    t1 = _order_id.set(order_id)
    t2 = _event_type.set(event_type)
    t3 = _order_ref.set(order_ref)
    t4 = _correlation.set(correlation_id)
    try:
        yield
    finally:
        _order_id.reset(t1)
        _event_type.reset(t2)
        _order_ref.reset(t3)
        _correlation.reset(t4)


def order_known(order_id: str) -> None:
    """The order id of the request being handled, learned by its handler (an order placed,
    or found placed, for its ref): said from here on by the log lines of the enclosing
    :func:`bind_order` and by the current span (``caravan.order_id``)."""
    _order_id.set(order_id)  # undone with the rest by bind_order's end
    trace.get_current_span().set_attribute("caravan.order_id", order_id)


@contextmanager
def working_for(
    headers: Mapping[str, str] | None, name: str, order_id: str | None
) -> Iterator[None]:
    """A loop's work for an order, done after the event that asked for it (a prepaid charge, a
    text, a status callback, an expiry sweep): a span continuing the trace stored with it
    (:func:`shared.telemetry.continuing`), every log line tagged with the order id."""
    with continuing(headers or {}, name, order_id), bind_order(order_id):
        yield

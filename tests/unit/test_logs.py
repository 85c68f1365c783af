"""Log lines (shared/logs.py): JSON with the service's name, and no buyer's phone number in
them, whichever code logged it."""

import ast
import asyncio
import contextlib
import gc
import inspect
import io
import json
import logging
import re
import socket
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace, TracebackType
from typing import cast

import httpx
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer import group_coordinator
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, UnknownMemberIdError
from aiokafka.producer import sender
from hypothesis import given
from hypothesis import strategies as st

from services.notifications.adapters.gateway import GatewayError, OutgoingSms, SinkGateway
from services.notifications.adapters.http_gateway import InfobipGateway
from services.orders import handlers as orders_handlers
from services.orders.entrypoints.subscribers import expiry_loop
from services.platform.domain.orders import PlatformOrder
from shared import logs, loop_lag, main
from shared.events.orders import Buyer
from shared.logs import (
    Faults,
    JsonFormatter,
    KafkaOutage,
    answers_again,
    configure_logging,
    masked,
    phones_masked,
)
from shared.messaging.relay import kafka_answers
from shared.messaging.uow import UnitOfWork
from shared.settings import Settings
from tests.harness import free_port
from tests.unit.test_healthz import Late


@pytest.mark.parametrize(
    ("phone", "shown"),
    [
        ("+8613912345678", "+86*******5678"),
        ("+14155550100", "+14*****0100"),
        ("8613912345678", "861******5678"),  # a malformed number is masked too
        ("+8612345", "********"),
        ("", ""),
    ],
)
def test_masked_numbers_keep_the_calling_code_and_the_last_four_digits(
    phone: str, shown: str
) -> None:
    assert masked(phone) == shown


@given(st.text(max_size=40))
def test_a_masked_number_never_shows_more_than_seven_characters(phone: str) -> None:
    shown = masked(phone)
    assert len(shown) == len(phone)
    assert sum(c != "*" for c in shown) <= 7
    assert len(phone) < 9 or shown[3:-4] == "*" * (len(phone) - 7)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("sms to +8613912345678: ok", "sms to +86*******5678: ok"),
        (
            "refused PUT /opt-outs/%2B8613912345678 from 10.0.0.1: scope",
            "refused PUT /opt-outs/%2B*********5678 from 10.0.0.1: scope",
        ),
        ("+14155550100 and +8615000000001", "+14*****0100 and +86*******0001"),
        ("call +442071838750", "call +44******8750"),  # no China mobile's digits in the text
        # not E.164: order ids, timestamps, amounts stay as they are
        ("order 0193e5c2-1f3a at 1764688000000 for 12500 fen", None),
        ("+0861391234567 +123456", None),
    ],
)
def test_phones_masked_masks_every_e164_number_and_nothing_else(
    text: str, shown: str | None
) -> None:
    assert phones_masked(text) == (text if shown is None else shown)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("sms to +44 7700 900123: ok", "sms to +44********0123: ok"),
        ("+1 415-555-0100.", "+1 ********0100."),
        ("+33 6 12 34 56 78 and +49 30 1234567", "+33**********6 78 and +49*******4567"),
        ("refused PUT /opt-outs/%2B44 7700 900123", "refused PUT /opt-outs/%2B**********0123"),
        ("+44 7700 900123 2026-12-04 14:28", "+44********0123 2026-12-04 14:28"),  # not the date
    ],
)
def test_phones_masked_masks_an_e164_number_grouped_by_spaces_or_dashes(
    text: str, shown: str
) -> None:
    """docs/personal-data.md: the logs mask E.164 numbers; one written grouped, as a foreign
    number is (``+44 7700 900123``), was logged whole."""
    found = phones_masked(text)
    assert found == shown
    assert not any(part in found for part in ("7700", "900123", "415", "555-", "1234567"))


@pytest.mark.parametrize(
    "text",
    [
        "at 2026-12-04 14:28:00+08:00 (+05:30 2026-12-04, +0800 2026)",
        "SWN-000123 adjusted +1200 since, +5 -3, +12 345, +1-2, +20 fen",
        "order 0193e5c2-1f3a-7b2c-8d4e-138001380001 +1 ORD-2026-12, ids 1234 5678 9012",
        "+0861391234567 +123456, +1 23 45",
    ],
)
def test_phones_masked_leaves_signed_amounts_offsets_and_ids_beside_spaces_and_dashes(
    text: str,
) -> None:
    assert phones_masked(text) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("buyer 86 138 0013 8000 called", "buyer 86 *********8000 called"),
        ("0086 138 0013 8000", "008***********8000"),
        ("to 008613800138000.", "to 008********8000."),
        ("+86 138 0013 8000", "+86**********8000"),
        ("+86-138-0013-8000, +86 13800138000", "+86**********8000, +86********8000"),
        ("86-13800138000", "86-*******8000"),
        ("call 139 1234-5678.", "call 139******5678."),
        ("(138 0013 8000)", "(138******8000)"),
        # a bare number that a word names a phone: the word kept
        ('{"id": "nick", "phone": "13800138000"}', '{"id": "nick", "phone": "138****8000"}'),
        (
            "receiver_mobile=13800138000&tel=8613800138001",
            "receiver_mobile=138****8000&tel=861******8001",
        ),
        ("手机：13800138000", "手机：138****8000"),
        # bare, a word naming it or not: pydantic's errors, a path, a gateway's echo
        ("input_value='13800138000', input_type=str", "input_value='138****8000', input_type=str"),
        (
            "refused PUT /opt-outs/13800138000 from ::1",
            "refused PUT /opt-outs/138****8000 from ::1",
        ),
        (
            '{"to":"8613800138000"}; telemetry 13800138000',
            '{"to":"861******8000"}; telemetry 138****8000',
        ),
        ("buyer_id=13800138000", "buyer_id=138****8000"),
        ("tid=86 138 0013 8000", "tid=86 *********8000"),  # an id word keeps no grouped number
    ],
)
def test_phones_masked_masks_a_china_mobile_number_as_platforms_and_operators_write_it(
    text: str, shown: str
) -> None:
    """A marketplace and operations write a buyer's number nationally, or after 86 or 0086:
    only ``+`` numbers were masked, these logged whole."""
    found = phones_masked(text)
    assert found == shown
    assert not any(number in found for number in ("0013", "13800138000", "13800138001"))


@pytest.mark.parametrize(
    "text",
    [
        # Order refs and platform ids are digit runs too (a Taobao item's id may be 11 digits
        # starting 1[3-9]): one that a word names an id is kept, as is any other length.
        "order t-market/3712345678901234567 placed (event 0193e5c2-1f3a-7b2c-8d4e-138001380001)",
        "platform SKU '18437586291' has no mapping; tid 1876543210987654321, sku 8613800138000",
        "num_iid=13800138000&tid=13912345678&oid=8613800138000&sku_id=15012345678",
        "order_ref=13800138000, item 13912345678, order 13800138000, 51234567890",
        "lot LOT-138-0013-8000 of SWN-PEPPER-CAYENNE-1KG, SWN-000123, buyer-0001, seller-001",
        "at 1764688000000 (1764688000) for 1380013800 fen, 2026-12-04 14:28:00.138",
        "the phone of order 13800138000; A-138-0013-8000",
    ],
)
def test_phones_masked_leaves_ids_amounts_and_times_that_are_digit_runs(text: str) -> None:
    assert phones_masked(text) == text


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


@given(
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.sampled_from(["", "86"]),
    st.sampled_from(
        [
            "input_value='",
            "/opt-outs/",
            '"to":"',
            "联系人：",
            "buyer ",
            "buyer_",
            "tel-",
            "(",
            "=",
            "",
        ]
    ),
    st.sampled_from(["num_iid=", "tid=", "oid=", "sku_id: ", "SKU '", "order ", "item_id="]),
)
def test_a_bare_mobile_number_is_masked_unless_a_word_names_it_an_id(
    number: str, code: str, before: str, id_word: str
) -> None:
    assert phones_masked(f"{before}{code}{number}'") == f"{before}{masked(code + number)}'"
    assert phones_masked(f"{id_word}{code}{number}'") == f"{id_word}{code}{number}'"


MOBILE_DIGITS = re.compile(r"(86)?1[3-9][0-9]{9}")


@given(st.integers(min_value=0).filter(lambda n: not MOBILE_DIGITS.fullmatch(str(n))), st.uuids())
def test_a_number_or_a_uuid_alone_is_never_masked(number: int, uuid: object) -> None:
    """Unless it is a mobile number's digits (masked, :data:`MOBILE_DIGITS`)."""
    for text in (str(number), f"order {number}: ok", f"order {uuid}", f"/orders/{uuid}/"):
        assert phones_masked(text) == text


WRITTEN_AT = datetime(2026, 12, 4, 14, 28, tzinfo=UTC).timestamp()
"""When the records below are written. A line's time is one of its fields: the clock's
microseconds read 0013 in about one line in 2,900 (1234 as often), and failed a test that no
digits of the number are in the line (``assert not True``, the number masked)."""


def written(record: logging.LogRecord) -> str:
    """The whole JSON line a service writes of ``record``, at :data:`WRITTEN_AT`."""
    record.created = WRITTEN_AT
    return JsonFormatter("test").format(record)


def formatted(record: logging.LogRecord) -> dict[str, str]:
    entry: dict[str, str] = json.loads(written(record))
    return entry


@pytest.mark.parametrize(
    ("raised", "argument", "message", "in_exception"),
    [
        ("+8613912345678", "+8613912345678", "+86*******5678", "+86*******5678"),
        # as platforms and operators write a China mobile number
        ("0086 139 1234 5678", "139 1234-5678", "139******5678", "008***********5678"),
    ],
)
def test_the_formatter_masks_numbers_in_the_message_and_the_exception(
    raised: str, argument: str, message: str, in_exception: str
) -> None:
    try:
        raise ValueError(f"no route to {raised}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "texting %s failed", (argument,), exc_info
    )
    entry = formatted(record)
    assert entry["message"] == f"texting {message} failed"
    assert in_exception in entry["exception"]
    assert "1234" not in json.dumps(entry)


def raised(work: Callable[[], object]) -> ExcInfo:
    try:
        work()
    except Exception as exc:
        return type(exc), exc, exc.__traceback__
    raise AssertionError("nothing raised")


def line(message: str, args: tuple[object, ...], exc_info: ExcInfo | None = None) -> str:
    """The whole JSON line a service writes of this record."""
    return written(logging.LogRecord("x", logging.WARNING, __file__, 1, message, args, exc_info))


def test_a_handlers_traceback_of_a_bad_buyer_phone_masks_pydantics_input_value() -> None:
    # A handler or a route that validates a buyer's national number as E.164 fails; the
    # consumer logs "handler failed" with its traceback, which quotes what was refused.
    bad = {"id": "buyer-0001", "phone": "13800138000"}
    written = line("handler failed (attempt %d/%d)", (1, 6), raised(lambda: Buyer(**bad)))
    assert "input_value='138****8000'" in written and "0013" not in written


def test_a_platform_orders_unreadable_buyer_masks_a_number_in_any_field() -> None:
    # A platform's buyer without its id but with its number in a field the adapter does not
    # read: pydantic quotes the buyer whole (the 500 path logs such a traceback).
    answer = {"order_id": "3712345678901234567", "status": "paid", "items": []}
    buyer = {"nick": "tb_hami", "联系": "13800138000"}
    exc_info = raised(lambda: PlatformOrder.model_validate({**answer, "buyer": buyer}))
    written = line("%s %s failed", ("POST", "/platform/t-market/push"), exc_info)
    assert "'联系': '138****8000'" in written and "0013" not in written


def test_a_refused_opt_out_path_masks_a_national_number() -> None:
    # An operator's PUT /opt-outs/13800138000 without the token's scope, as the guard logs it.
    written = line("refused %s %s from %s: %s", ("PUT", "/opt-outs/13800138000", "::1", "scope"))
    assert "/opt-outs/138****8000" in written and "0013" not in written


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("call +86 (138) 0013 8000 at noon", "call +86************8000 at noon"),
        ("call (+86) 138 0013 8000 at noon", "call (+86***********8000 at noon"),
        ("call 138.0013.8000 at noon", "call 138******8000 at noon"),
        ("call 138-0013-8000 at noon", "call 138******8000 at noon"),
        # full-width digits, as a Chinese storefront's form may send them
        ("联系人：１３８００１３８０００", "联系人：１３８****８０００"),
        ("call +86 １３８ ００１３ ８０００", "call +86**********８０００"),
        ("call ＋８６１３８００１３８０００", "call ＋８６*******８０００"),
        # glued to "_", "." or "-"
        ("no reply from buyer_13800138000", "no reply from buyer_138****8000"),
        ("texted 13800138000.", "texted 138****8000."),
        ("texted tel-13800138000, buyer-13800138000", "texted tel-138****8000, buyer-138****8000"),
        ("key 13800138000_reminder", "key 138****8000_reminder"),
        # after a word naming it a phone, glued to it or to letters, bracketed, dotted
        ("call tel(138) 0013-8000 now", "call tel(13********8000 now"),
        ("call Tel.138.0013.8000 now", "call Tel.138******8000 now"),
        ("call TEL-138-0013-8000 now", "call TEL-138******8000 now"),
        ("phone:(+86)138.0013.8000", "phone:(+86**********8000"),
        ("dial tel13800138000ext2", "dial tel138****8000ext2"),
        # a Chinese keyboard's brackets; separators mixed
        ("联系人（138）0013-8000", "联系人（13*******8000"),
        ("call (138) 0013.8000 now", "call (13********8000 now"),
    ],
)
def test_the_formatter_masks_a_mobile_number_written_in_other_ways(said: str, shown: str) -> None:
    """A buyer's number as forms, platforms and people write it besides E.164: these were
    logged whole, but for the dashed one, the one at a sentence's end and tel- (masked
    already), and ``(+86) 138 0013 8000``, masked as a grouped number with ``(+86)`` shown
    apart (now as the number after ``+86`` is)."""
    written = line("%s", (said,))
    assert json.loads(written)["message"] == shown
    assert not any(digits in written for digits in ("0013", "００１３", "13800138000"))


@pytest.mark.parametrize(
    "said",
    [
        "num_iid=13800138000, num_iid_13800138000, sku_13800138000, item-13800138000",
        "tid=2385912345678 (a platform order), sku 1380013800012, SKU-1380013800012",
        "at 20261204123456, ts-20261204123456, 1764688000000, ２０２６１２０４１２３４５６",
        "for 12500 fen (¥125.00, 1380013800 fen), rate 0.13800138000, 13800138000.25 yuan",
        "lot LOT-138-0013-8000, v1.138.0013.8000, 3.138.0013.8000",
        "order SWN-13800138000 placed, order_ref=TB-13912345678",
        # beside a word naming a phone: ids, UUIDs, amounts and dates are none
        "hotel order 13800138000, telemetry of 0193e5c2-1f3a-7b2c-8d4e-138001380001",
        "phone of order 0193e5c2-1f3a-7b2c-8d4e-138001380001: 13800 fen at 2026-12-04 13:58",
        "tel (¥138.00), mobile 2026-12-04, phone 138 fen, tel-v1.138.0013",
    ],
)
def test_the_formatter_leaves_platform_ids_times_and_amounts(said: str) -> None:
    assert json.loads(line("%s", (said,)))["message"] == said


async def test_an_sms_gateway_echoing_the_destination_is_masked() -> None:
    # Infobip is sent the number without its "+" and may quote it when it refuses the text.
    said = "Invalid destination address: 8613912345678"
    body = {"requestError": {"serviceException": {"messageId": "BAD_REQUEST", "text": said}}}
    gateway = InfobipGateway(
        "http://sms.test",
        "key",
        "Caravan",
        None,
        1,
        transport=httpx.MockTransport(lambda request: httpx.Response(400, json=body)),
    )
    with pytest.raises(GatewayError) as refused:
        await gateway.send(
            OutgoingSms(sms_id="s-1", dedup_key="k-1", to="+8613912345678", text="x")
        )
    written = line("sms %s failed after %d attempts: %s", ("s-1", 1, refused.value))
    assert "address: 861******5678" in written and "1234" not in written


async def test_the_sink_logs_the_text_but_not_the_number(caplog: pytest.LogCaptureFixture) -> None:
    message = OutgoingSms(sms_id="s-1", dedup_key="k-1", to="+8613912345678", text="Order A1 ok")
    with caplog.at_level(logging.INFO, logger="services.notifications.adapters.gateway"):
        await SinkGateway().send(message)
    [record] = caplog.records
    entry = formatted(record)
    assert entry["message"] == "sms s-1 to +86*******5678: Order A1 ok"


@pytest.fixture
def service_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The lines a service writes once configure_logging has run as it runs it; the root
    logger and the loggers it turns down are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    lines = io.StringIO()
    monkeypatch.setattr(sys, "stderr", lines)
    configure_logging("payments")
    yield lines
    root.handlers[:], root.level = handlers, level
    for name, was in loggers.items():
        logging.getLogger(name).setLevel(was)


async def test_an_outgoing_call_logs_no_credentials_of_its_url(service_lines: io.StringIO) -> None:
    # A gateway URL may carry its key (https://merchant:KEY@gw/...): httpx logs every request's
    # URL at INFO, which a service's lines would then show with every charge.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post("https://merchant:s3cret-gw-key@gw.example/charges")
    logging.getLogger("services.payments").info("charged")  # the service's own lines are kept
    assert '"message": "charged"' in service_lines.getvalue()
    assert "s3cret-gw-key" not in service_lines.getvalue()


class _Quiet:
    """A service that logs one line of each level and stops."""

    name = "payments"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def serve(self, stop: asyncio.Event) -> None:
        logging.getLogger("services.payments").info("an info line")
        logging.getLogger("services.payments").warning("a warning line")
        logging.getLogger("aiokafka").warning("a warning of Kafka's")
        logging.getLogger("aiokafka.conn").error(UNREACHABLE, "kafka", 9092, "refused")


QUIET = cast(main.Composition, SimpleNamespace(bootstrap=_Quiet, checks=lambda settings: []))
UNREACHABLE = 'Unable connect to "%s:%s": %s'  # aiokafka's error, written as a warning


def test_a_service_logs_at_the_level_its_settings_name(
    service_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CARAVAN_LOG_LEVEL=ERROR: a service writes neither its own warnings nor Kafka's, nor
    aiokafka's errors that a broker cannot be reached, which are warnings."""
    monkeypatch.setattr(sys, "stderr", service_lines)  # pytest's capture took it meanwhile
    monkeypatch.setenv("CARAVAN_LOG_LEVEL", "ERROR")
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "set_threshold", lambda *_: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")  # not reached
    main.run({"payments": QUIET})
    assert service_lines.getvalue() == ""
    monkeypatch.setenv("CARAVAN_LOG_LEVEL", "INFO")
    main.run({"payments": QUIET})
    said = service_lines.getvalue()
    assert "an info line" in said and "a warning of Kafka's" in said, said
    [unreachable] = [
        entry for line in said.splitlines() if "Unable" in (entry := json.loads(line))["message"]
    ]
    assert unreachable["level"] == "warning", unreachable


@pytest.mark.parametrize(
    ("given", "instance"), [("2", "2"), (None, socket.gethostname())], ids=["given", "host"]
)
@pytest.mark.parametrize("refused", [False, True], ids=["running", "settings refused"])
def test_a_service_s_lines_name_its_instance(
    service_lines: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    given: str | None,
    instance: str,
    refused: bool,
) -> None:
    """``caravan up`` (and the tests' second instances) set CARAVAN_INSTANCE_ID on each
    instance started (a second inventory is 2), which nothing read: two instances' lines
    could not be told apart. Replicas deployed outside ``caravan up`` (compose, Kubernetes)
    given none were all instance "1", their lines and Kafka clients alike: unset, it is the
    host's name (a pod's, a container's). The one line that its settings are refused named
    no instance at all."""
    monkeypatch.setattr(sys, "stderr", service_lines)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(gc, "set_threshold", lambda *_: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:x@127.0.0.1:1/caravan")  # not reached
    if given is None:
        monkeypatch.delenv("CARAVAN_INSTANCE_ID", raising=False)
    else:
        monkeypatch.setenv("CARAVAN_INSTANCE_ID", given)
    if refused:
        monkeypatch.setenv("CARAVAN_TOPIC_PARTITIONS", "0")
        with pytest.raises(SystemExit, match="2"):
            main.run({"payments": QUIET})
    else:
        main.run({"payments": QUIET})
    entries = [json.loads(line) for line in service_lines.getvalue().splitlines()]
    assert entries and all(e["instance"] == instance for e in entries), entries
    said = [e["message"] for e in entries if e["message"].startswith("settings refused")]
    assert len(said) == refused, entries


async def test_kafka_unreachable_is_one_warning_and_other_kafka_errors_stay(
    service_lines: io.StringIO,
) -> None:
    """aiokafka's own lines, a broker nobody answers tried five times (an ERROR line each),
    are one warning; an error of aiokafka's not about reaching a broker stays an error."""
    for _ in range(5):
        client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{free_port()}")
        with pytest.raises(KafkaConnectionError):
            await client.bootstrap()
        await client.close()
    logging.getLogger("aiokafka.cluster").error("Topic %s not found in cluster metadata", "x")
    said = [json.loads(line) for line in service_lines.getvalue().splitlines()]
    assert [(s["level"], s["message"].split(" ")[0]) for s in said] == [
        ("warning", "Unable"),
        ("error", "Topic"),
    ], said


def test_a_kafka_outage_after_a_quiet_spell_is_said_at_once() -> None:
    """An outage's lines are said once a minute; one ten seconds after the last line of an
    earlier outage (said or not) starts another, said at once, not held back until a
    minute has passed since the earlier one was said."""
    now = [0.0]
    outage = KafkaOutage(clock=lambda: now[0])

    def said_at(at: float) -> bool:
        now[0] = at
        args = ("kafka", 9092, "refused")
        record = logging.LogRecord("aiokafka.conn", logging.ERROR, "", 0, UNREACHABLE, args, None)
        return outage.filter(record)

    assert [said_at(at) for at in range(0, 60, 5)] == [True] + [False] * 11  # one outage
    assert said_at(60) is True  # a minute since it was said, still going
    assert said_at(75) is True  # the next outage, after 15 s without a line
    assert [said_at(at) for at in (76, 80, 85)] == [False, False, False]


def test_a_producer_s_send_failing_in_a_kafka_outage_is_one_warning(
    service_lines: io.StringIO,
) -> None:
    """Kafka stopped for 54 s, notifications logged aiokafka's "Got error produce response:
    NodeNotReadyError" 527 times (ten a second): it is one of the lines that a broker cannot
    be reached, said once, then at most once a minute. The words are aiokafka's own."""
    said = "Got error produce response: %s"
    assert f'log.warning("{said}", err)' in inspect.getsource(sender)
    for _ in range(20):
        logging.getLogger(sender.__name__).warning(said, NodeNotReadyError("node 1 not ready"))
    lines = [json.loads(line) for line in service_lines.getvalue().splitlines()]
    assert [(s["level"], s["message"]) for s in lines] == [
        ("warning", "Got error produce response: NodeNotReadyError: node 1 not ready")
    ], lines


def aiokafka_words(module: types.ModuleType) -> set[str]:
    """Every string constant in ``module``'s source (a line's words split over several
    literals are one constant)."""
    said = ast.walk(ast.parse(inspect.getsource(module)))
    return {n.value for n in said if isinstance(n, ast.Constant) and isinstance(n.value, str)}


NOT_LEADER = "Got error produce response on topic-partition %s, retrying. Error: %s"
NO_COORDINATOR = (
    "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid"
)


def test_a_kafka_restart_is_said_in_a_few_lines() -> None:
    """A drill killed Kafka for 80 s: besides the outage's warnings, each service logged 14 to
    27 of "Got error produce response on topic-partition ..., retrying. Error:
    NotLeaderForPartitionError" and 8 to 12 of "Heartbeat failed for group ...: coordinator
    ... is either not started or not valid", all within 3 s of the broker's return (its
    partitions and groups loading). They are the outage's: the restart is said twice (at
    its start, and a minute on); the same lines going on by themselves, a leader never
    found, are said once a minute while they do. The words are aiokafka's own."""
    assert NOT_LEADER in aiokafka_words(sender)
    assert NO_COORDINATOR in aiokafka_words(group_coordinator)
    now = [0.0]
    outage = KafkaOutage(clock=lambda: now[0])

    def said_at(at: float, name: str, message: str, args: tuple[object, ...]) -> str:
        now[0] = at
        record = logging.LogRecord(name, logging.WARNING, "", 0, message, args, None)
        return record.getMessage() if outage.filter(record) else ""

    unreachable = ("aiokafka.conn", UNREACHABLE, ("kafka", 9092, "refused"))
    not_leader = (sender.__name__, NOT_LEADER, ("orders-0", "NotLeaderForPartitionError"))
    no_coordinator = (group_coordinator.__name__, NO_COORDINATOR, ("caravan-orders", 1))
    down = [said_at(at, *unreachable) for at in range(80)]
    back = [
        said_at(80 + at / 10, *line) for at in range(30) for line in (not_leader, no_coordinator)
    ]
    assert [line for line in down + back if line] == [
        'Unable connect to "kafka:9092": refused',
        'Unable connect to "kafka:9092": refused (59 more like it not logged; the first 60 s ago)',
    ]
    later = [said_at(200 + at / 2, *not_leader) for at in range(250)]  # leaders never found
    assert [at for at, line in enumerate(later) if line] == [0, 120, 240], later


def test_a_member_fenced_from_its_group_is_a_warning_not_an_error(
    service_lines: io.StringIO,
) -> None:
    """An instance frozen past its session (``kill -STOP``) and thawed commits the offsets it
    handled, which the group refuses (UnknownMemberIdError): aiokafka logs it as an error and
    rejoins. The expected fencing of a member the group went on without, not a bug: a
    warning, in aiokafka's words. Its other commit failures stay errors."""
    fenced = "OffsetCommit failed for group %s due to group error (%s), will rejoin"
    other = "OffsetCommit failed for group %s on partition %s with offset %s: %s"
    assert fenced in aiokafka_words(group_coordinator)
    log = logging.getLogger(group_coordinator.__name__)
    log.error(fenced, "caravan-inventory", UnknownMemberIdError("caravan-inventory"))
    log.error(other, "caravan-inventory", "tp", 5, "OffsetOutOfRangeError")
    lines = [json.loads(line) for line in service_lines.getvalue().splitlines()]
    assert [(s["level"], s["message"]) for s in lines] == [
        (
            "warning",
            "OffsetCommit failed for group caravan-inventory due to group error"
            " ([Error 25] UnknownMemberIdError: caravan-inventory), will rejoin",
        ),
        (
            "error",
            "OffsetCommit failed for group caravan-inventory on partition tp with offset 5:"
            " OffsetOutOfRangeError",
        ),
    ], lines


def _fault_line(faults: Faults, at: float, now: list[float], fault: str = "PostgreSQL away") -> str:
    """What ``faults`` makes of a retried fault's warning logged at ``at``: its message, or ""
    when it is not said."""
    now[0] = at
    record = logging.LogRecord("shared.loops", logging.WARNING, "", 0, "%s failed", ("a",), None)
    record.fault = fault
    return record.getMessage() if faults.filter(record) else ""


def test_a_retried_fault_is_said_once_then_once_a_minute_saying_what_was_not() -> None:
    """PostgreSQL stopped for 52 s, the five services logged 534 warnings: each loop and
    request at each retry. A fault (its key) is said once, then once a minute while it goes
    on, saying how many were not said and since when; another fault is said meanwhile."""
    now = [0.0]
    faults = Faults(clock=lambda: now[0])
    said = [_fault_line(faults, at / 2, now) for at in range(0, 120)]  # two a second
    assert said[0] == "a failed"
    assert said[1:] == [""] * 119
    assert (
        _fault_line(faults, 60, now) == "a failed (119 more like it not logged; the first 60 s ago)"
    )
    assert _fault_line(faults, 61, now, "no free connection") == "a failed"  # another fault
    assert [_fault_line(faults, at, now) for at in (70, 100, 119)] == ["", "", ""]
    assert _fault_line(faults, 120, now).endswith(
        "(3 more like it not logged; the first 120 s ago)"
    )


def test_a_retried_fault_ends_when_told_or_after_a_minute_unmet() -> None:
    """Told that PostgreSQL answers again (a connection made), the fault is over, with when
    it began and what was not said since the last line said; the next is said at once, as
    is one met a minute after the last line of an earlier one (said or not)."""
    now = [0.0]
    faults = Faults(clock=lambda: now[0])
    assert [_fault_line(faults, at, now) for at in (0, 5, 10)] == ["a failed", "", ""]
    spell = faults.over("PostgreSQL away")
    assert spell is not None and (spell.began, spell.held) == (0, 2)
    assert faults.over("PostgreSQL away") is None  # said once
    assert [_fault_line(faults, at, now) for at in (11, 12, 70)] == ["a failed", "", ""]
    assert _fault_line(faults, 130, now) == "a failed"  # a minute after 70: another outage


def test_the_end_of_a_fault_says_1_warning_not_logged_in_the_singular(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL answers again after two warnings, one of them said: the line said
    "(1 warnings of it not logged ...)". One is a warning, none and more are warnings."""
    now = [0.0]
    faults = Faults(clock=lambda: now[0])
    monkeypatch.setattr(logs, "FAULTS", faults)
    caplog.set_level(logging.INFO, "shared.db")
    said = []
    for held in (1, 0, 2):
        now[0] += 120.0  # a minute after the last: another outage
        for at in range(held + 1):
            _fault_line(faults, now[0] + at, now)
        answers_again(logging.getLogger("shared.db"), "PostgreSQL away", "PostgreSQL")
        said.append(caplog.records[-1].getMessage().split(" (")[1])
    assert said == [
        "1 warning of it not logged since the last that was)",
        "0 warnings of it not logged since the last that was)",
        "2 warnings of it not logged since the last that was)",
    ], said


async def test_a_fault_met_as_the_process_itself_ran_again_after_a_freeze_is_said_its_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Thawed after a minute's ``kill -STOP``, a service met Kafka away (its requests timed
    out by its own clock) and a second later said "Kafka answers again, 1 s after it was
    first found away", blaming Kafka for its own freeze. Its loop late by more than the
    fault lasted (as /healthz tells its own lateness from Kafka silent), it says the process
    was not running; late a little, or less than the fault lasted, Kafka's outage stands."""
    now = [0.0]
    faults = Faults(clock=lambda: now[0])
    monkeypatch.setattr(logs, "FAULTS", faults)
    caplog.set_level(logging.INFO, "shared.messaging.relay")
    said = []
    for late, lasted in ((60.0, 1.0), (3.0, 1.0), (60.0, 90.0)):
        monkeypatch.setattr(loop_lag, "_running", (Late(late), asyncio.get_running_loop()))
        now[0] += 600.0  # another outage
        _fault_line(faults, now[0], now, "Kafka away")
        now[0] += lasted
        kafka_answers(logging.getLogger("shared.messaging.relay"))
        said.append(caplog.records[-1].getMessage())
    unsaid = " (0 warnings of it not logged since the last that was)"
    assert said == [
        "Kafka answers again, 1 s after it was first found away: the process itself was not"
        " running (this service's event loop was 60 s late: stopped, swapped out or short of"
        f" CPU), not Kafka away{unsaid}",
        f"Kafka answers again, 1 s after it was first found away{unsaid}",
        f"Kafka answers again, 90 s after it was first found away{unsaid}",
    ], said


class _Sweeps:
    """A unit of work whose transactions do nothing: the expiry sweep's work is stubbed."""

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        yield


async def test_the_expiry_warning_not_said_adds_up_the_orders_it_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Four sweeps expire 5, 100, 300 and 7 orders within a minute: the warning is said at
    the first and the fourth (a retried fault's), and the fourth said "(2 more like it not
    logged; ...)", which an operator took for two orders more, where 400 had expired in
    them. It says both."""
    expiring = [[f"o-{n}-{i}" for i in range(n)] for n in (5, 100, 300, 7)]
    done = asyncio.Event()

    async def expire_due(tx: object, now: object) -> list[str]:
        if not expiring:
            done.set()
            return []
        return expiring.pop(0)

    monkeypatch.setattr(orders_handlers, "expire_due", expire_due)
    with caplog.at_level(logging.WARNING, logger="services.orders"):
        task = asyncio.create_task(expiry_loop(cast(UnitOfWork, _Sweeps()), 60.0))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    now = [0.0]
    faults = Faults(clock=lambda: now[0])
    said = []
    for at, record in zip((0, 20, 40, 60), caplog.records, strict=True):
        now[0] = at
        said.append(record.getMessage() if faults.filter(record) else "")
    assert [line.split(":")[0] for line in said] == [
        "expired 5 order(s) pending past their deadline, the oldest o-5-0",
        "",
        "",
        "expired 7 order(s) pending past their deadline, the oldest o-7-0",
    ]
    assert said[3].endswith("(2 more like it not logged, 400 orders in them; the first 60 s ago)")

"""Log lines (shared/logs.py): JSON with the service's name, and no buyer's phone number in
them, whichever code logged it."""

import io
import json
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications.adapters.gateway import OutgoingSms, SinkGateway
from shared.logs import JsonFormatter, configure_logging, masked, phones_masked


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
        # not E.164: order ids, timestamps, amounts stay as they are
        ("order 0193e5c2-1f3a at 1764688000000 for 12500 fen", None),
        ("+0861391234567 +123456", None),
    ],
)
def test_phones_masked_masks_every_e164_number_and_nothing_else(
    text: str, shown: str | None
) -> None:
    assert phones_masked(text) == (text if shown is None else shown)


def formatted(record: logging.LogRecord) -> dict[str, str]:
    entry: dict[str, str] = json.loads(JsonFormatter("test").format(record))
    return entry


def test_the_formatter_masks_numbers_in_the_message_and_the_exception() -> None:
    try:
        raise ValueError("no route to +8613912345678")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "texting %s failed", ("+8613912345678",), exc_info
    )
    entry = formatted(record)
    assert entry["message"] == "texting +86*******5678 failed"
    assert "+86*******5678" in entry["exception"]
    assert "13912345678" not in json.dumps(entry)


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

"""docs/platform.md's examples are what the code does: each block after an
``<!-- example: NAME -->`` marker is read here and checked against the adapter's own code
(its signing, its parsing of a push, its order API client and its status callback)."""

import json
import re
import shlex
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from caravan.checkout import REPO_ROOT
from services.platform.adapters import platform_api
from services.platform.adapters.platform_api import PlatformApi, StatusUpdate
from services.platform.adapters.tables import pushes
from services.platform.bootstrap import forgotten
from services.platform.callbacks import CallbackPolicy
from services.platform.domain import signing
from services.platform.domain.orders import STATUSES, meaning
from services.platform.domain.retries import Backoff
from services.platform.domain.signing import SignMethod, fresh, verify
from services.platform.entrypoints.http import ORDER_REF, Resolve, parse_params
from shared.settings import PlatformApp, Settings

GUIDE = (REPO_ROOT / "docs" / "platform.md").read_text()
EXAMPLES: dict[str, str] = dict(
    re.findall(r"<!-- example: ([\w-]+) -->\n```[\w-]*\n(.*?)\n```", GUIDE, flags=re.DOTALL)
)
APP_NAME, APP = next(iter(json.loads(EXAMPLES["app"]).items()))
SECRET = APP["secret"]
SIGNED_AT = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)  # the examples' timestamps


def _signing_lines() -> dict[str, str]:
    lines = (line.split(":", 1) for line in EXAMPLES["signing"].splitlines())
    return {label: said.strip() for label, said in lines}


def _push_params() -> dict[str, str]:
    pairs = (pair.split("=", 1) for pair in _signing_lines()["parameters"].split())
    return dict(pairs)


def _curl(block: str) -> list[str]:
    return shlex.split(block.replace("\\\n", " "))


def _after(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == flag]


def _api(answer: Any) -> PlatformApi:
    api = PlatformApi({APP_NAME: PlatformApp.model_validate(APP)}, timeout=1)
    api.client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return api


def test_every_example_is_checked() -> None:
    assert set(EXAMPLES) == {
        "app",
        "signing",
        "sign-python",
        "push-json",
        "push-form",
        "push-curl",
        "order-request",
        "order-response",
        "callback",
        "resolve",
    }


def test_the_example_app_is_one_the_settings_take() -> None:
    app = PlatformApp.model_validate(APP)
    assert app.secret.get_secret_value() == SECRET and app.sign_method == "hmac-sha256"


def test_the_worked_signing_example_is_what_caravan_computes() -> None:
    said, params = _signing_lines(), _push_params()
    assert signing.payload(params).decode() == said["string signed"]
    assert signing.sign(params, SECRET) == said["hmac-sha256"]
    assert signing.sign(params, SECRET, "md5") == said["md5"]


@pytest.mark.parametrize("method", ["hmac-sha256", "md5"])
def test_the_python_signer_signs_as_caravan_does(method: SignMethod) -> None:
    scope: dict[str, Any] = {}
    exec(EXAMPLES["sign-python"], scope)
    for params in (
        _push_params(),
        {"b": "1", "a": "", "aa": "12.50", "订单": "辣椒", "sign": "not signed"},
    ):
        assert scope["sign"](params, SECRET, method) == signing.sign(params, SECRET, method)


def test_the_example_push_is_one_the_adapter_takes() -> None:
    """As JSON, as a form and in the curl line: the same parameters, signed, fresh at the
    time they say, with an order_id that is an order_ref."""
    params = parse_params(EXAMPLES["push-json"].encode(), "application/json")
    assert params == {**_push_params(), "sign": _signing_lines()["hmac-sha256"]}
    assert verify(params, SECRET)
    assert fresh(params["timestamp"], SIGNED_AT, 300) and not fresh(
        params["timestamp"], datetime.now(UTC), 300
    )
    assert ORDER_REF.fullmatch(params["order_id"])
    form = EXAMPLES["push-form"].encode()
    assert parse_params(form, "application/x-www-form-urlencoded") == params
    curl = _curl(EXAMPLES["push-curl"])
    assert _after(curl, "-H") == ["Content-Type: application/json"]
    assert urlsplit(f"http://{curl[3]}").path == f"/platform/{APP_NAME}/push"
    assert parse_params(_after(curl, "-d")[0].encode(), "application/json") == params


def test_the_timestamps_the_guide_names_are_read_as_it_says() -> None:
    """The push table's ``timestamp`` row: each form it gives is the examples' instant, and
    those it says are not taken are not."""
    (row,) = (line for line in GUIDE.splitlines() if line.startswith("| `timestamp` | yes |"))
    taken, refused = row.split("not one without a zone otherwise")
    examples = [e for e in re.findall(r"`([^`]+)`", taken)[1:] if e != "yyyy-MM-dd HH:mm:ss"]
    assert len(examples) == 5  # the first is the name; Taobao's form is named, then shown
    assert {signing.parse_timestamp(e) for e in examples} == {SIGNED_AT}
    fraction = re.findall(r"`([^`]+)`", refused)[0]
    for unread in (fraction, examples[2].removesuffix("Z")):
        assert signing.parse_timestamp(unread) is None


async def test_the_order_api_is_asked_and_answered_as_the_guide_says() -> None:
    """The request the adapter sends has the example's path and parameters (whose sign is
    right); the example answer is read by the adapter as a paid order."""
    method, target = EXAMPLES["order-request"].split()
    said = urlsplit(target)
    said_query = parse_qsl(said.query)
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, content=EXAMPLES["order-response"].encode())

    api = _api(answer)
    order = await api.fetch_order(APP_NAME, dict(said_query)["order_id"])
    await api.close()
    (request,) = asked
    assert (request.method, request.url.path) == (method, said.path)
    assert [name for name, _ in request.url.params.multi_items()] == [n for n, _ in said_query]
    assert verify(dict(said_query), SECRET)
    assert fresh(dict(said_query)["timestamp"], SIGNED_AT, 300)
    assert order.order_id == dict(said_query)["order_id"] and meaning(order.status) == "paid"


async def test_the_example_callback_is_what_the_adapter_sends() -> None:
    """Exactly the example's fields and header, the same values but the time and its sign
    (the example's own sign is right)."""
    head, body_text = EXAMPLES["callback"].split("\n\n")
    request_line, *header_lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    body = json.loads(body_text)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    api = _api(answer)
    update = StatusUpdate(
        body["idempotency_key"],
        body["order_id"],
        body["status"],
        body["reason"] or None,
        body["caravan_order_id"],
    )
    assert await api.push_status(APP_NAME, update) == 200
    await api.close()
    (request,) = sent
    ours = json.loads(request.content)
    assert f"{request.method} {request.url.path}" == request_line
    assert list(ours) == list(body)
    unsigned = {k: v for k, v in ours.items() if k not in ("timestamp", "sign")}
    assert unsigned == {k: v for k, v in body.items() if k not in ("timestamp", "sign")}
    assert verify(ours, SECRET) and verify(body, SECRET)
    assert fresh(body["timestamp"], SIGNED_AT, 300)
    for name, value in headers.items():
        assert request.headers[name] == value
    assert headers["Idempotency-Key"] == body["idempotency_key"]


async def test_each_attempt_of_a_callback_is_signed_at_its_sending_within_the_guides_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guide gave a platform no window to check a callback's timestamp by. It says one,
    and each attempt (an hour apart, as retries through an outage may be) carries the time it
    was sent, fresh within that window at its sending, and the same idempotency key."""
    callback = GUIDE.split("## The status callback")[1].split("\n## ")[0]
    window = int(re.findall(r"older than (\d+) s", callback)[0])
    sent: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(503)

    now = [SIGNED_AT]
    monkeypatch.setattr(platform_api, "datetime", SimpleNamespace(now=lambda tz: now[0]))
    api = _api(answer)
    update = StatusUpdate("k-1", "MKT-20261204-0001", "confirmed", None, "c-1")
    for later in (timedelta(0), timedelta(hours=1)):
        now[0] = SIGNED_AT + later
        assert await api.push_status(APP_NAME, update) == 503
        assert fresh(sent[-1]["timestamp"], now[0], window) and verify(sent[-1], SECRET)
        assert not fresh(sent[-1]["timestamp"], now[0] + timedelta(seconds=window + 1), window)
    await api.close()
    first, second = sent
    assert int(second["timestamp"]) - int(first["timestamp"]) == 3600
    assert first["idempotency_key"] == second["idempotency_key"] == "k-1"
    assert first["sign"] != second["sign"]


def test_the_resolve_example_is_a_json_request_the_route_takes() -> None:
    curl = _curl(EXAMPLES["resolve"])
    assert curl[:3] == ["curl", "-X", "POST"]
    assert "Content-Type: application/json" in _after(curl, "-H")
    assert any(urlsplit(f"http://{w}").path == "/platform/problems/resolve" for w in curl)
    asked = Resolve.model_validate_json(_after(curl, "-d")[0])
    assert asked.app == APP_NAME and asked.platform_order_id == _push_params()["order_id"]


def test_the_status_table_names_every_status_the_adapter_reads() -> None:
    """The guide's table of statuses names each of ``STATUSES``, under its meaning, and no
    other: a status added to the adapter (or its meaning changed) shows here."""
    table = GUIDE.split("`status`, as the adapter reads it")[1].split("\n\n")[1]
    listed = {
        name: row.split("|")[1].strip()
        for row in table.splitlines()[2:]
        for name in re.findall(r"`([^`]+)`", row.split("|")[2])
    }
    headings = {
        "not paid yet": "wait_pay",
        "paid: place it": "paid",
        "cancelled": "cancelled",
        "refunding": "refunding",
        "a step of fulfilment": "fulfilment",
    }
    assert {name: headings[row] for name, row in listed.items()} == dict(STATUSES)


def test_the_guide_says_how_many_callbacks_come_at_once() -> None:
    """A status API of a few connections had callbacks reset (``ReadError``, retried later)
    in a platform drill (session 63): the guide did not say that up to a batch come at once."""
    batch = CallbackPolicy(Backoff()).batch
    assert f"and up to {batch} at once from each adapter instance" in " ".join(GUIDE.split())


def test_the_guide_says_how_long_a_push_id_is_kept() -> None:
    """The guide said a push id is taken once per app, as if for ever: the adapter's prune
    forgets push ids (and signatures) three timestamp windows old, after which the same push
    is decided anew. It says so, with the minutes of the default window."""
    default = Settings.model_fields["platform_timestamp_window_seconds"].default
    settings = Settings(platform_timestamp_window_seconds=default)
    (kept,) = (e for e in forgotten(settings) if e.table is pushes)
    said = " ".join(GUIDE.split())
    windows = {"three": 3}[re.findall(r"are kept at least (\w+) timestamp windows", said)[0]]
    minutes = int(re.findall(r"timestamp windows \((\d+) minutes with the defaults\)", said)[0])
    window_hours = settings.platform_timestamp_window_seconds / 3600
    assert kept.hours == windows * window_hours == minutes / 60

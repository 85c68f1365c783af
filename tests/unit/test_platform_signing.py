"""The platform adapter's pure rules: request signing, timestamps, order mapping, retries."""

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError

from services.platform.adapters.platform_api import (
    PlatformApi,
    PlatformRefused,
    PlatformUnavailable,
    SignatureRefused,
    UnreadableOrder,
)
from services.platform.domain.orders import (
    NOT_NUMBERED,
    STATUSES,
    BuyerMapping,
    PlatformItem,
    PlatformOrder,
    Problem,
    SkuMapping,
    mapped_to_unknown_sku,
    meaning,
    rejected,
    to_request,
    undone_on_platform,
    unknown_status,
)
from services.platform.domain.retries import Backoff, verdict
from services.platform.domain.signing import (
    TIMESTAMP_FORMATS,
    SignMethod,
    fingerprint,
    fresh,
    parse_timestamp,
    payload,
    sign,
    signed,
    unread_timestamp,
    verify,
)
from services.platform.entrypoints.http import parse_params
from shared.events.orders import Delivery, OrderRequested
from shared.settings import PlatformApp

PARAMS = {"timestamp": "1764489600", "app_key": "ali", "order_id": "P-1", "sign": "ignored"}


def test_the_signed_bytes_are_sorted_names_and_values_without_the_sign() -> None:
    assert payload(PARAMS) == b"app_keyaliorder_idP-1timestamp1764489600"


def test_hmac_sha256_is_upper_case_hex_of_the_payload_keyed_by_the_secret() -> None:
    expected = hmac.new(b"s3cret", payload(PARAMS), hashlib.sha256).hexdigest().upper()
    assert sign(PARAMS, "s3cret") == expected
    assert len(expected) == 64 and expected == expected.upper()


def test_md5_wraps_the_payload_in_the_secret() -> None:
    expected = hashlib.md5(b"s3cret" + payload(PARAMS) + b"s3cret").hexdigest().upper()
    assert sign(PARAMS, "s3cret", "md5") == expected


@pytest.mark.parametrize("method", ["hmac-sha256", "md5"])
def test_verify_accepts_the_right_sign_and_refuses_any_change(method: SignMethod) -> None:
    params = {k: v for k, v in PARAMS.items() if k != "sign"}
    good = {**params, "sign": sign(params, "s3cret", method)}
    assert verify(good, "s3cret", method)
    assert verify({**good, "sign": good["sign"].lower()}, "s3cret", method)
    assert not verify(good, "other", method)
    assert not verify({**good, "order_id": "P-2"}, "s3cret", method)
    assert not verify({**good, "extra": "1"}, "s3cret", method)
    assert not verify(params, "s3cret", method)
    other: SignMethod = "md5" if method == "hmac-sha256" else "hmac-sha256"
    assert not verify(good, "s3cret", other)


def test_names_are_sorted_not_the_concatenations() -> None:
    # "a"+"bc" and "ab"+"c" concatenate alike; sorting is by name, so order stays defined.
    assert payload({"b": "1", "a": "2", "aa": "3"}) == b"a2aa3b1"


def test_timestamps_in_seconds_milliseconds_and_iso() -> None:
    at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert parse_timestamp(str(int(at.timestamp()))) == at
    assert parse_timestamp(str(int(at.timestamp() * 1000))) == at
    assert parse_timestamp("2026-11-30T16:00:00+08:00") == at
    assert parse_timestamp("2026-11-30T08:00:00Z") == at
    assert parse_timestamp("2026-11-30t08:00:00z") == at  # RFC 3339 allows lower case
    for bad in ["", "soon", "2026-11-30T08:00:00", "99999999999999999999999"]:
        assert parse_timestamp(bad) is None


def test_taobaos_timestamp_is_read_as_beijing_time_and_no_other_zoneless_one() -> None:
    """Taobao's TOP API writes ``yyyy-MM-dd HH:mm:ss`` in GMT+8; any other time without a
    zone names no instant, so is not read (the push is told which formats are)."""
    at = datetime(2026, 12, 4, 17, 4, tzinfo=UTC)
    assert parse_timestamp("2026-12-05 01:04:00") == at
    assert parse_timestamp(" 2026-12-05 01:04:00 ") == at
    for zoneless in ["2026-12-04T17:04:00", "2026-12-05 01:04", "2026-12-05 01:04:00.5"]:
        assert parse_timestamp(zoneless) is None, zoneless
    assert parse_timestamp("2026-12-05 1:04:00") is None
    assert "yyyy-MM-dd HH:mm:ss in Beijing time" in TIMESTAMP_FORMATS


def test_a_timestamp_not_read_is_quoted_up_to_40_characters() -> None:
    assert unread_timestamp("") == f"timestamp needed, one of: {TIMESTAMP_FORMATS}"
    assert unread_timestamp("1796433915.5").startswith("timestamp '1796433915.5' is in no format")
    said = unread_timestamp("9" * 1000)
    assert f"'{'9' * 40}...'" in said and "9" * 41 not in said


def test_a_push_signed_anew_has_its_fingerprint_and_another_push_not() -> None:
    push = {"app_key": "ali", "push_id": "p-1", "order_id": "P-1", "timestamp": "1764489600"}
    same = fingerprint(signed(push, "s3cret"))
    anew = {**push, "timestamp": "2026-12-05 01:04:00"}
    assert fingerprint(signed(anew, "s3cret", "md5")) == same
    assert fingerprint({**push, "order_id": "P-2"}) != same
    assert fingerprint({**push, "event": "order_changed"}) != same
    # "a"+"bc" and "ab"+"c" are the same signed bytes, but not the same push.
    assert fingerprint({"a": "bc"}) != fingerprint({"ab": "c"})


def test_a_timestamp_is_fresh_within_the_window_either_way() -> None:
    now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

    def stamp(delta: float) -> str:
        return str(int((now + timedelta(seconds=delta)).timestamp()))

    assert fresh(stamp(0), now, 300)
    assert fresh(stamp(-300), now, 300)
    assert fresh(stamp(120), now, 300)
    assert not fresh(stamp(-301), now, 300)
    assert not fresh(stamp(600), now, 300)
    assert not fresh(None, now, 300)


ORDER = PlatformOrder.model_validate(
    {
        "order_id": "P-100",
        "status": "paid",
        "buyer": {"id": "nick-1", "phone": "+8613900000009"},
        "items": [
            {"sku": "ALI-PEP", "quantity": 2},
            {"sku": "ALI-PEP-GIFT", "quantity": 1},
            {"sku": "ALI-RSN", "quantity": 3},
        ],
    }
)
SKUS = {
    "ALI-PEP": SkuMapping(sku="T-PEPPER"),
    "ALI-PEP-GIFT": SkuMapping(sku="T-PEPPER"),
    "ALI-RSN": SkuMapping(sku="T-RAISIN"),
}
BUYERS = {"nick-1": BuyerMapping(buyer_id="t-rich", locale="en")}


def test_a_mapped_order_becomes_a_prepaid_request_with_merged_lines() -> None:
    request = to_request(ORDER, SKUS, BUYERS)
    assert isinstance(request, OrderRequested)
    assert request.order_ref == "P-100"
    assert request.buyer.id == "t-rich" and request.buyer.phone == "+8613900000009"
    assert request.buyer.locale == "en"
    assert {(line.sku, line.quantity) for line in request.lines} == {
        ("T-PEPPER", 3),
        ("T-RAISIN", 3),
    }
    assert request.payment.method == "prepaid"


def test_the_mappings_phone_wins_over_the_platforms() -> None:
    buyers = {"nick-1": BuyerMapping(buyer_id="t-rich", phone="+8613900000001")}
    request = to_request(ORDER, SKUS, buyers)
    assert isinstance(request, OrderRequested) and request.buyer.phone == "+8613900000001"


def test_unmapped_skus_and_buyers_are_problems_not_guesses() -> None:
    """One problem of each kind (operations list one row per kind and order), naming every
    unmapped SKU: with one row a SKU, the second was hidden until the first was mapped."""
    found = to_request(ORDER, {"ALI-PEP": SKUS["ALI-PEP"]}, {})
    assert isinstance(found, list)
    assert [p.kind for p in found] == ["unmapped_sku", "unmapped_buyer"]
    assert found[0].detail == "platform SKUs 'ALI-PEP-GIFT', 'ALI-RSN' have no mapping"
    one = to_request(ORDER, {k: v for k, v in SKUS.items() if k != "ALI-RSN"}, BUYERS)
    assert one == [Problem("unmapped_sku", "platform SKU 'ALI-RSN' has no mapping")]


def test_a_mapping_to_a_sku_inventory_does_not_have_names_each_platform_sku_as_mapped_now() -> None:
    """Every platform SKU of the order cancelled ``unknown_sku``, sorted, with the SKU of ours
    it is mapped to now (or none: unmapped since); an order placed before its platform SKUs
    were kept says so. Each says what to mend, for which app, and that nothing is placed again."""
    mapped = {"ALI-RSN": "NO-SUCH-SKU", "ALI-PEP": "T-PEPPER", "ALI-GONE": None}
    problem = mapped_to_unknown_sku("t-market", "o-1", mapped)
    assert problem.kind == "mapped_to_unknown_sku"
    said = "'ALI-GONE' -> no mapping, 'ALI-PEP' -> 'T-PEPPER', 'ALI-RSN' -> 'NO-SUCH-SKU'"
    assert problem.detail.endswith(f"mapped now: {said}"), problem.detail
    old = mapped_to_unknown_sku("t-market", "o-1", None).detail
    assert old.endswith("mapped now: not kept for an order placed before 2026-12-05"), old
    for detail in (problem.detail, old):
        assert detail.startswith("our order o-1 was cancelled unknown_sku: "), detail
        assert "/platform/t-market/mappings/sku/" in detail and "cannot be placed again" in detail
        assert "`caravan platform map-sku t-market PLATFORM_SKU SKU` checks it" in detail, detail


def with_phone(phone: str | None) -> PlatformOrder:
    """``ORDER`` with the platform giving its buyer's phone so."""
    return ORDER.model_copy(update={"buyer": ORDER.buyer.model_copy(update={"phone": phone})})


def test_an_order_we_cannot_accept_is_an_invalid_order_problem() -> None:
    found = to_request(with_phone(None), SKUS, BUYERS)
    assert isinstance(found, list) and [p.kind for p in found] == ["invalid_order"]
    said = "buyer.phone: the platform gives none, and the buyer's mapping has none"
    assert found[0].detail == said


@pytest.mark.parametrize(
    "phone",
    ["13912345678", "139 1234-5678", "+86 139-1234-5678", "008613912345678", "86 13912345678"],
)
def test_a_platform_phone_in_national_format_is_placed_in_e164(phone: str) -> None:
    """A Chinese marketplace writes its buyers' numbers nationally: each was an
    ``invalid_order`` problem ("buyer.phone: String should match pattern") for operations
    to mend by hand, the buyer's paid order waiting."""
    request = to_request(with_phone(phone), SKUS, BUYERS)
    assert isinstance(request, OrderRequested), request
    assert request.buyer.phone == "+8613912345678"


def test_a_platform_phone_not_read_is_a_problem_naming_the_field_not_the_number() -> None:
    """The problem's detail is logged: it never holds the number."""
    found = to_request(with_phone("0991 123 4567"), SKUS, BUYERS)
    assert isinstance(found, list) and [p.kind for p in found] == ["invalid_order"]
    assert found[0].detail == (
        "buyer.phone: the platform gives one that is neither E.164 nor a mainland China mobile"
        " number written nationally, and the buyer's mapping has none"
    )
    assert "0991" not in found[0].detail and "4567" not in found[0].detail
    # With other faults, each is named.
    many = ORDER.model_copy(update={"items": [PlatformItem(sku="ALI-RSN", quantity=20_000)]})
    found = to_request(many.model_copy(update={"buyer": with_phone("x").buyer}), SKUS, BUYERS)
    assert isinstance(found, list) and [p.kind for p in found] == ["invalid_order"]
    assert [f.split(":")[0] for f in found[0].detail.split("; ")] == [
        "buyer.phone",
        "lines.0.quantity",
    ]
    # A mapping's phone is the buyer's, whatever the platform gives.
    mapped = {"nick-1": BuyerMapping(buyer_id="t-rich", phone="+8613900000001")}
    request = to_request(with_phone("0991 123 4567"), SKUS, mapped)
    assert isinstance(request, OrderRequested) and request.buyer.phone == "+8613900000001"


def test_a_platform_phone_given_as_a_json_number_is_read() -> None:
    body = ORDER.model_dump_json().replace('"+8613900000009"', "13912345678")
    request = to_request(PlatformOrder.model_validate_json(body), SKUS, BUYERS)
    assert isinstance(request, OrderRequested) and request.buyer.phone == "+8613912345678"


def test_text_with_nul_in_a_mapped_order_is_an_invalid_order_problem() -> None:
    """A NUL that reached the order (a model built without validation) is refused here: the
    request was published, then dead-lettered by orders, and the order lost unseen."""
    delivery = Delivery.model_construct(county="Shawan", address="Village 3\x00")
    found = to_request(ORDER.model_copy(update={"delivery": delivery}), SKUS, BUYERS)
    assert isinstance(found, list) and [p.kind for p in found] == ["invalid_order"]
    assert "NUL" in found[0].detail


def test_a_status_the_adapter_does_not_know_is_read_and_named_in_its_problem() -> None:
    """A platform moves a paid order on (shipped, finished, refunding...) and pushes each
    change: the order was unreadable (a 422, and an invalid_order problem opened for an
    order placed and fine). It is read; never placed, it is a problem naming the status."""
    for status in ("shipped", "WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED", "refunding"):
        order = PlatformOrder.model_validate({**ORDER.model_dump(), "status": status})
        assert order.status == status
    shipped = ORDER.model_copy(update={"status": "shipped"})
    problem = unknown_status(shipped)
    assert problem.kind == "unknown_status" and "'shipped'" in problem.detail, problem
    assert "never placed" in problem.detail
    assert {meaning(s) for s in ("shipped", "finished", "TRADE_FINISHED")} == {"fulfilment"}
    assert {meaning(s) for s in ("closed", "on_hold")} == {None}


def test_an_unknown_status_of_an_order_placed_names_our_order_and_what_to_undo() -> None:
    """A placed order the platform says is closed may be a sale to undo: the problem names
    our order (it was "ignored", as a shipped one is, and nobody was told)."""
    closed = ORDER.model_copy(update={"status": "closed"})
    problem = unknown_status(closed, "N-123")
    assert problem.kind == "unknown_status"
    assert "'closed'" in problem.detail and "our order N-123" in problem.detail
    assert "refunded or closed" in problem.detail, problem
    meanings = ["cancelled", "fulfilment", "paid", "refunding", "wait_pay"]
    assert sorted(set(STATUSES.values())) == meanings
    for unreadable in ("", "x" * 65, 3, None):  # no status at all is no order
        with pytest.raises(ValueError, match="status"):
            PlatformOrder.model_validate({**ORDER.model_dump(), "status": unreadable})


def test_taobao_trade_statuses_are_read_as_the_adapters_own() -> None:
    """A paid Taobao order (WAIT_SELLER_SEND_GOODS) was an unknown_status problem, never
    placed; its unpaid and closed-before-payment names were not read either. TRADE_CLOSED
    (closed after payment, the buyer's money given back) is a cancellation: nothing to do for
    an order we cancelled first, a sale to undo by hand for one placed (it was unknown, a
    problem even for an order we had cancelled). So is a refund under way (its refund
    statuses), and a "0 yuan" purchase or a paid order not to be shipped yet waits as unpaid
    (both were unknown_status problems, "find out whether it was paid")."""
    read = {
        "TRADE_NO_CREATE_PAY": "wait_pay",
        "WAIT_BUYER_PAY": "wait_pay",
        "PAY_PENDING": "wait_pay",
        "WAIT_PRE_AUTH_CONFIRM": "wait_pay",
        "PAID_FORBID_CONSIGN": "wait_pay",
        "WAIT_SELLER_SEND_GOODS": "paid",
        "TRADE_CLOSED_BY_TAOBAO": "cancelled",
        "TRADE_CLOSED": "cancelled",
        "WAIT_SELLER_AGREE": "refunding",
        "WAIT_BUYER_RETURN_GOODS": "refunding",
        "WAIT_SELLER_CONFIRM_GOODS": "refunding",
        "SELLER_CONSIGNED_PART": "fulfilment",
        "WAIT_BUYER_CONFIRM_GOODS": "fulfilment",
        "TRADE_BUYER_SIGNED": "fulfilment",
        "TRADE_FINISHED": "fulfilment",
        "paid": "paid",
        "wait_pay": "wait_pay",
        "cancelled": "cancelled",
        "refunding": "refunding",
    }
    assert {status: meaning(status) for status in read} == read
    assert meaning("trade_closed") is None and meaning("trade_finished") is None


def test_an_order_placed_that_the_platform_cancels_or_refunds_says_what_to_do() -> None:
    """A refund asked for after we placed the order was an unknown_status problem ("the
    adapter does not know"): it is one saying the buyer asked for a refund, of which order,
    and what operations do; a cancellation stays cancelled_on_platform. What they can do
    depends on our order: one confirmed here cannot be cancelled (the route answers 409, as
    an operator following "cancel it" found), so only one not confirmed yet is to cancel."""
    refunding = ORDER.model_copy(update={"status": "WAIT_SELLER_AGREE"})
    closed = ORDER.model_copy(update={"status": "TRADE_CLOSED"})
    for confirmed in (True, False):
        refund = undone_on_platform(refunding, "N-1", confirmed)
        assert refund.kind == "refund_requested", refund
        assert "'WAIT_SELLER_AGREE'" in refund.detail and "our order N-1" in refund.detail
        assert "refuse it" in refund.detail or "refuse the refund" in refund.detail, refund
        cancelled = undone_on_platform(closed, "N-1", confirmed)
        assert cancelled.kind == "cancelled_on_platform" and "'TRADE_CLOSED'" in cancelled.detail
        for problem in (refund, cancelled):
            said = problem.detail
            if confirmed:
                assert "confirmed here, which Caravan cannot undo" in said, said
                assert "stop the goods" in said and "/cancel" not in said, said
                assert "(`caravan payments void-sold N-1 --reason ...`: the platform's" in said
            else:
                assert (  # the buyer's cancellation: cancelled_by_buyer, as it is called back
                    "cancel it for its buyer (`caravan orders cancel N-1 --by buyer`, or"
                    " `POST /orders/N-1/cancel`)" in said
                )
    # Placed, its order.placed not read yet: no route to a made-up id (a review found
    # `POST /orders/not numbered yet/cancel`).
    early = undone_on_platform(closed, NOT_NUMBERED, False).detail
    assert "/orders/not numbered" not in early and "/orders/{order_id}/cancel" in early, early


def test_a_rejected_order_says_where_its_request_is_and_how_it_is_placed() -> None:
    """A platform order the orders service refused was a problem saying only "the orders
    service refused it: lines.0.quantity: must be 1 or more": its request is a dead letter a
    push never sends again, and the runbook's redrive, placing it, was named nowhere."""
    said = rejected("demo-market", "lines.0.quantity: must be 1 or more").detail
    assert said.startswith("the orders service refused it: lines.0.quantity: must be 1 or more;")
    assert "(`caravan dlq list --source platform/demo-market`)" in said, said
    assert "`caravan dlq redrive LETTER --value-file F`" in said and "resolve this then" in said
    reused = rejected("demo-market", "order_ref: names another order", "N-1").detail
    assert "our order N-1 stands" in reused and "redrive places nothing" in reused, reused
    long = rejected("demo-market", "x" * 5000).detail
    assert len(long) < 1000 and long.endswith("A rejected request redriven)"), long


def test_status_api_answers() -> None:
    assert verdict(200) == verdict(204) == "delivered"
    assert verdict(None) == verdict(503) == verdict(500) == verdict(429) == "retry"
    assert verdict(408) == "retry"
    assert verdict(401) == verdict(403) == "retry"  # our signature: a clock or a secret to mend
    assert verdict(400) == verdict(404) == verdict(422) == "failed"


def test_backoff_grows_to_its_cap_with_equal_jitter() -> None:
    policy = Backoff(max_attempts=5, base_seconds=1.0, cap_seconds=8.0)
    assert [policy.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert policy.delay(10**6, rand=lambda: 1.0) == 8.0  # shared.backoff: no overflow
    assert not policy.exhausted(4) and policy.exhausted(5)


def test_a_push_waits_as_long_as_the_order_api_has_failed_within_the_backoff() -> None:
    """Retry-After of an order API failing: whole seconds, base to cap (it was 1 always)."""
    policy = Backoff(base_seconds=1.0, cap_seconds=300.0)
    waits = [policy.retry_after(s) for s in (0.0, 0.2, 1.5, 42.0, 299.1, 3600.0)]
    assert waits == [1, 1, 2, 42, 300, 300]


def test_push_bodies_are_flat_parameters_from_a_form_or_json() -> None:
    assert parse_params(b"a=1&b=x+y&sign=AB", "application/x-www-form-urlencoded") == {
        "a": "1",
        "b": "x y",
        "sign": "AB",
    }
    assert parse_params(b'{"a": 1, "b": "x", "c": 2.50, "d": 1E3}', "application/json") == {
        "a": "1",
        "b": "x",
        "c": "2.50",  # as the platform wrote it, and signed it
        "d": "1E3",
    }
    for body, kind in [
        (b'{"a": {"b": 1}}', "application/json"),
        (b'{"a": true}', "application/json"),
        (b'{"a": NaN}', "application/json"),
        (b"[1]", "application/json"),
        (b"a=1&a=2", "application/x-www-form-urlencoded"),
        (b"not a form", "application/x-www-form-urlencoded"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json"),  # was a RecursionError
        (b'{"order_id": "\\ud800", "sign": "x"}', "application/json"),  # no UTF-8 to sign
    ]:
        with pytest.raises(ValueError):
            parse_params(body, kind)
    assert parse_params(b'{"a": "1"}', "Application/JSON; charset=UTF-8") == {"a": "1"}


def test_a_json_push_sent_as_another_type_or_none_is_told_to_send_json_unquoted() -> None:
    """It was read as a form, and refused "bad query field: '{\"app_key\": ...'", quoting
    the body and its sign; so was any body not a form."""
    json_body = b' {"app_key": "alimarket", "order_id": "P-1", "sign": "ABCDEF0123"}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        with pytest.raises(ValueError) as refused:
            parse_params(json_body, kind)
        assert "send Content-Type: application/json" in str(refused.value), refused.value
        assert "ABCDEF0123" not in str(refused.value)
    with pytest.raises(ValueError) as refused:
        parse_params(b"order_id=P-1&sign=ABCDEF0123&x", "application/x-www-form-urlencoded")
    assert str(refused.value) == "not a form: name=value pairs joined by &"
    assert parse_params(b"a=1", None) == {"a": "1"}  # a form needs no Content-Type


async def test_the_order_api_s_answers_are_told_apart() -> None:
    """404: the platform does not know the order; 401/403: our signature refused (push again
    once mended, so not "unknown", nor "unavailable"); another status or none: said so; an
    answer that is not an order: unreadable. The order id
    is one path segment, whatever it holds."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode().split("?")[0])
        order_id = request.url.params["order_id"]
        if order_id == "gone":
            return httpx.Response(404)
        if order_id == "locked":
            return httpx.Response(401)
        if order_id == "broken":
            return httpx.Response(500)
        if order_id == "slow":
            raise httpx.ReadTimeout("timed out", request=request)
        if order_id == "odd":
            return httpx.Response(200, json={**ORDER.model_dump(), "items": []})
        if order_id == "moved-on":  # a status we do not know: read all the same
            return httpx.Response(200, json={**ORDER.model_dump(), "status": "on_hold"})
        if order_id == "nul":  # PostgreSQL cannot store it: our order.requested was refused
            delivery = {"county": "Shawan", "address": "Village 3\u0000"}
            return httpx.Response(200, json={**ORDER.model_dump(), "delivery": delivery})
        return httpx.Response(200, json={**ORDER.model_dump(), "order_id": order_id})

    api = _api(answer)
    with pytest.raises(PlatformRefused):
        await api.fetch_order("m", "gone")
    with pytest.raises(SignatureRefused, match="answered 401 to Caravan's signed request"):
        await api.fetch_order("m", "locked")
    with pytest.raises(PlatformUnavailable, match=r"^the order API answered 500$"):
        await api.fetch_order("m", "broken")
    with pytest.raises(PlatformUnavailable, match=r"^the order API did not answer within 1 s$"):
        await api.fetch_order("m", "slow")
    with pytest.raises(UnreadableOrder, match=r"items: must hold at least 1 item \(it holds 0\)"):
        await api.fetch_order("m", "odd")
    assert (await api.fetch_order("m", "moved-on")).status == "on_hold"
    with pytest.raises(UnreadableOrder, match="NUL"):
        await api.fetch_order("m", "nul")
    assert (await api.fetch_order("m", "../status")).order_id == "../status"
    assert seen[-1] == "/api/orders/..%2Fstatus"
    await api.close()


async def test_an_order_fetched_on_a_kept_connection_the_server_closed_is_asked_again() -> None:
    """A push got 503 "the order API could not be reached (RemoteProtocolError)" when the
    pooled connection the GET went on had just been closed by the platform's server (its
    keep-alive ran out as the request left: a fresh-clone CI run); a GET is asked once more."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["order_id"])
        if len(asked) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={**ORDER.model_dump(), "order_id": "P-1"})

    api = _api(answer)
    assert (await api.fetch_order("m", "P-1")).order_id == "P-1"
    assert asked == ["P-1", "P-1"]
    asked.clear()

    def never(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["order_id"])
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    api.client = httpx.AsyncClient(transport=httpx.MockTransport(never))
    with pytest.raises(PlatformUnavailable, match="could not be reached"):
        await api.fetch_order("m", "P-2")
    assert asked == ["P-2", "P-2"]  # once more only
    await api.close()


def _api(answer: Callable[[httpx.Request], httpx.Response]) -> PlatformApi:
    """A client of app ``m``, whose order API answers as ``answer`` does."""
    app = PlatformApp.model_validate({"secret": "s" * 16, "api_url": "http://platform.test/api/"})
    api = PlatformApi({"m": app}, timeout=1)
    api.client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return api


async def test_an_order_api_answer_not_an_object_says_why_without_an_empty_field() -> None:
    """Not JSON, or not an object, was said with an empty field name: "not an order we can
    read: : not JSON: ..."."""
    answers = {"html": b"<html>busy</html>", "list": b"[]"}
    api = _api(lambda request: httpx.Response(200, content=answers[request.url.params["order_id"]]))
    for order_id, said in [("html", "not JSON: "), ("list", "must be a JSON object")]:
        with pytest.raises(UnreadableOrder) as refused:
            await api.fetch_order("m", order_id)
        assert str(refused.value).startswith(f"not an order we can read: {said}"), refused.value
    await api.close()


async def test_an_unreadable_order_names_each_field_at_fault_for_its_422() -> None:
    """A marketplace drill's order API answered ``"quantity": "2"``: the push's 422 said
    it in its detail alone, where every other 422 of the push, and platform.md, give
    ``errors``, each ``{field, message}``, for a program to read. Each field at fault is
    named, the first 50 of an order's items, and an answer not read whole is its ``body``."""
    line = {"sku": "ALI-PEP", "quantity": "2"}
    order = {**ORDER.model_dump(), "order_id": "P-1", "items": [line, {"sku": "ALI-RSN"}]}
    many = {**order, "order_id": "P-2", "items": [line] * 60}
    answers = {"P-1": order, "P-2": many}
    api = _api(lambda request: httpx.Response(200, json=answers[request.url.params["order_id"]]))
    with pytest.raises(UnreadableOrder) as refused:
        await api.fetch_order("m", "P-1")
    assert refused.value.errors == [
        {"field": "items.0.quantity", "message": "must be a whole number, not a string"},
        {"field": "items.1.quantity", "message": "must be given"},
    ]
    assert str(refused.value) == (
        "not an order we can read: items.0.quantity: must be a whole number, not a string;"
        " items.1.quantity: must be given"
    )
    with pytest.raises(UnreadableOrder) as refused:
        await api.fetch_order("m", "P-2")
    assert len(refused.value.errors) == 50
    await api.close()
    api = _api(lambda request: httpx.Response(200, content=b"<html>busy</html>"))
    with pytest.raises(UnreadableOrder) as refused:
        await api.fetch_order("m", "P-3")
    [error] = refused.value.errors
    assert error["field"] == "body" and error["message"].startswith("not JSON: "), error
    await api.close()


async def test_an_order_api_answer_is_read_no_further_than_its_limit() -> None:
    """A 40 MB answer was read whole (and the order in it placed): the adapter's memory grew
    by as much. Past 4 MiB it is not an order we read, said before it all comes when its
    Content-Length says so."""
    sent: list[int] = []
    order = ORDER.model_dump_json().encode()

    async def endless() -> AsyncIterator[bytes]:
        yield order[:-1] + b', "padding": "'
        for _ in range(40):
            sent.append(1)
            yield b"x" * 2**20
        yield b'"}'

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params["order_id"] == "declared":
            return httpx.Response(200, headers={"content-length": str(40 * 2**20)})
        if request.url.params["order_id"] == "padded":  # under the limit: read
            return httpx.Response(200, content=order[:-1] + b', "x": "' + b"x" * 2**21 + b'"}')
        return httpx.Response(200, content=endless())

    api = _api(answer)
    for order_id in ("P-100", "declared"):
        with pytest.raises(UnreadableOrder, match=r"answered over 4194304 bytes \(4 MiB\)"):
            await api.fetch_order("m", order_id)
    assert len(sent) <= 5, len(sent)
    assert (await api.fetch_order("m", "padded")).order_id == "P-100"
    await api.close()


def test_a_buyer_mapping_takes_a_phone_as_operations_type_it() -> None:
    """The mapping's phone is read as the platform's is: written nationally it was a 422 at
    the PUT (only E.164 was taken), where the same number from the platform was placed."""
    mapping = BuyerMapping.model_validate({"buyer_id": "b-1", "phone": "139 1234-5678"})
    assert mapping.phone == "+8613912345678"
    assert BuyerMapping.model_validate({"buyer_id": "b-1", "phone": "+447700900123"}).phone == (
        "+447700900123"
    )
    assert BuyerMapping.model_validate({"buyer_id": "b-1"}).phone is None
    for unreadable in ("12345", "call me"):
        with pytest.raises(ValidationError, match="phone"):
            BuyerMapping.model_validate({"buyer_id": "b-1", "phone": unreadable})

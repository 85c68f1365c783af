"""Tests for buyer SMS templates and money formatting."""

from __future__ import annotations

import re
from datetime import date
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caravan.cli import DEMO_SEED
from services.notifications.domain.sms import encode_info
from services.notifications.domain.templates import (
    CANCEL_REASONS,
    DEFAULT_LOCALE,
    MAX_SEGMENTS,
    PAYMENT_METHODS,
    SUPPORTED_LOCALES,
    InstalmentStage,
    format_amount,
    format_money,
    pick_locale,
    product_name,
    render_instalment,
    render_new_order_for_seller,
    render_order_cancelled,
    render_order_confirmed,
    render_refund_paid,
    signed,
)
from services.payments.domain.credit import schedule
from shared.events.orders import MAX_LINES, MAX_QUANTITY, MAX_TERM_MONTHS, Locale
from shared.seed import MAX_UNIT_PRICE_FEN, SeedFile
from shared.settings import MAX_MONTHLY_INTEREST_BP

REF = "CRV-20240501-0007"
MAINLAND = "+8613900000001"  # a mainland China mobile: every text is signed 【Caravan】
ABROAD = "+447700900123"  # elsewhere: the locale's signature
ARABIC = re.compile("[\u0600-\u06ff]")
HAN = re.compile("[\u4e00-\u9fff]")
REASONS = (*CANCEL_REASONS, "something_new")
METHODS = (*PAYMENT_METHODS, "bank_transfer_v2")


def test_supported_locales_match_literal() -> None:
    assert set(SUPPORTED_LOCALES) == set(get_args(Locale))
    assert SUPPORTED_LOCALES[0] == DEFAULT_LOCALE == "zh-CN"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zh-CN", "zh-CN"),
        ("ug-CN", "ug-CN"),
        ("en", "en"),
        ("ug", "ug-CN"),
        ("UG_cn", "ug-CN"),
        ("ug-Arab-CN", "ug-CN"),
        ("en-US", "en"),
        ("en_GB.UTF-8", "en"),
        (" EN ", "en"),
        ("zh", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("kk-CN", "zh-CN"),
        ("fr", "zh-CN"),
        ("", "zh-CN"),
        (None, "zh-CN"),
    ],
)
def test_pick_locale(value: str | None, expected: str) -> None:
    assert pick_locale(value) == expected


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (3500, "35.00"),
        (5, "0.05"),
        (0, "0.00"),
        (7000, "70.00"),
        (10, "0.10"),
        (123456789, "1234567.89"),
        (-5, "-0.05"),
        (-1250, "-12.50"),
    ],
)
def test_format_amount(fen: int, text: str) -> None:
    assert format_amount(fen) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_amount_round_trips(fen: int) -> None:
    text = format_amount(fen)
    assert re.fullmatch(r"-?\d+\.\d{2}", text)
    sign = -1 if text.startswith("-") else 1
    yuan, cents = text.lstrip("-").split(".")
    assert sign * (int(yuan) * 100 + int(cents)) == fen


def test_format_money_per_locale() -> None:
    assert format_money("zh-CN", 7000) == "¥70.00"
    assert format_money("ug-CN", 7000) == "70.00 يۈەن"
    assert format_money("en", 7000) == "CNY 70.00"


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("method", METHODS)
def test_confirmed_renders_for_every_locale_and_method(locale: Locale, method: str) -> None:
    text = render_order_confirmed(locale, REF, 3500, method)
    assert REF in text
    assert format_money(locale, 3500) in text
    assert "{" not in text


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("reason", REASONS)
def test_cancelled_renders_for_every_locale_and_reason(locale: Locale, reason: str) -> None:
    text = render_order_cancelled(locale, REF, reason)
    assert REF in text
    assert "{" not in text


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_each_reason_has_its_own_wording(locale: Locale) -> None:
    texts = {render_order_cancelled(locale, REF, reason) for reason in REASONS}
    assert len(texts) == len(REASONS)


PRODUCT_REASONS = ("unknown_sku", "out_of_stock", "out_of_season")


def test_a_cancellation_for_a_product_names_it_in_the_buyers_words() -> None:
    """Raisins in stock, walnuts out of season: the text said "the product is out of season",
    and the buyer could not tell which."""
    walnuts = {"zh-CN": "新疆核桃 1公斤", "ug-CN": "شىنجاڭ ياڭىقى 1 كىلوگرام", "en": "Walnuts 1 kg"}
    said = {
        locale: render_order_cancelled(locale, REF, "out_of_season", [walnuts[locale]])
        for locale in SUPPORTED_LOCALES
    }
    assert said == {
        "zh-CN": f"您的订单{REF}已取消，原因：商品已过季（新疆核桃 1公斤）。"
        "给您带来不便，敬请谅解。",
        "ug-CN": f"{REF} نومۇرلۇق بۇيرۇتمىڭىز ئەمەلدىن قالدۇرۇلدى، سەۋەبى: مەھسۇلاتنىڭ پەسلى"
        " ئۆتۈپ كەتتى (شىنجاڭ ياڭىقى 1 كىلوگرام). كەچۈرۈڭ.",
        "en": f"Your order {REF} has been cancelled because Walnuts 1 kg is out of season."
        " Sorry for the inconvenience.",
    }
    assert render_order_cancelled("en", REF, "out_of_stock", ["Honey"]) == (
        f"Your order {REF} has been cancelled because Honey is out of stock."
        " Sorry for the inconvenience."
    )
    assert render_order_cancelled("en", REF, "unknown_sku", ["SWN-X-1", "SWN-Y-2"]) == (
        f"Your order {REF} has been cancelled because SWN-X-1, SWN-Y-2 could not be found."
        " Sorry for the inconvenience."
    )
    assert "商品不存在（SWN-X-1）" in render_order_cancelled(
        "zh-CN", REF, "unknown_sku", ["SWN-X-1"]
    )
    assert "مال قالمىدى (Honey)" in render_order_cancelled("ug-CN", REF, "out_of_stock", ["Honey"])


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_more_products_are_three_named_and_all_counted(locale: Locale) -> None:
    text = render_order_cancelled(locale, REF, "out_of_stock", [f"P{n}" for n in range(1, 6)])
    assert "P1" in text and "P3" in text and "P4" not in text
    said = {
        "zh-CN": "P1、P2、P3等5种商品",
        "ug-CN": "P1، P2، P3 قاتارلىق 5 خىل مەھسۇلات",
        "en": "P1, P2, P3 and 2 more are out of stock",
    }
    assert said[locale] in text, text
    two = render_order_cancelled(locale, REF, "out_of_season", ["Figs", "Dates"])
    assert {"zh-CN": "Figs、Dates", "ug-CN": "Figs، Dates", "en": "Figs, Dates are"}[locale] in two


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("reason", REASONS)
def test_a_cancellation_naming_no_product_texts_as_before(locale: Locale, reason: str) -> None:
    """An order.cancelled without skus (of before, or of a reason of no product) is texted as
    it was; products given with a reason of no product are not said."""
    before = render_order_cancelled(locale, REF, reason)
    assert render_order_cancelled(locale, REF, reason, []) == before
    named = render_order_cancelled(locale, REF, reason, ["Walnuts 1 kg"])
    assert (named != before) == (reason in PRODUCT_REASONS)
    assert ("Walnuts 1 kg" in named) == (reason in PRODUCT_REASONS)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_a_cancellation_naming_a_demo_product_keeps_each_locales_length(locale: Locale) -> None:
    """Named by any one of the demo's products, a cancellation is as short as one naming none:
    English abroad one GSM-7 SMS (to China UCS-2, 3 parts at most), Chinese one SMS, Uyghur
    3 parts at most."""
    for product in DEMO_PRODUCTS:
        for reason in PRODUCT_REASONS:
            body = render_order_cancelled(
                locale, REF, reason, [product_name(locale, product.name, product.sku)]
            )
            mainland = encode_info(signed(locale, MAINLAND, body))
            assert mainland.segments <= (1 if locale == "zh-CN" else 3), body
            if locale == "en":
                abroad = encode_info(signed(locale, ABROAD, body))
                assert (abroad.encoding, abroad.segments) == ("GSM-7", 1), body


def test_an_order_expired_is_said_as_not_completed_in_time_not_as_the_buyers_delay() -> None:
    """An order expires when it waited on Caravan past the saga's deadline (a backlog, a
    service down), often after the buyer paid a platform: "it expired" and "已超时" (timed out,
    as an order not paid in time is said) read as the buyer's fault."""
    assert render_order_cancelled("en", REF, "expired") == (
        f"Your order {REF} could not be completed in time and has been cancelled."
        " Sorry for the inconvenience."
    )
    assert render_order_cancelled("zh-CN", REF, "expired") == (
        f"您的订单{REF}未能及时完成处理，系统已自动取消。给您带来不便，敬请谅解。"
    )


def test_an_order_operations_cancelled_is_said_as_cancelled_by_staff_not_at_your_request() -> None:
    """Operations cancelling an order of their own accord said ``cancelled_by_buyer``, and the
    buyer read "cancelled at your request", which they never made: ``cancelled_by_operator``
    says staff cancelled it, with the apology of every cancellation the buyer did not ask for."""
    said = {
        locale: render_order_cancelled(locale, REF, "cancelled_by_operator")
        for locale in SUPPORTED_LOCALES
    }
    assert said == {
        "zh-CN": f"您的订单{REF}已由工作人员取消。给您带来不便，敬请谅解。",
        "ug-CN": f"{REF} نومۇرلۇق بۇيرۇتمىڭىز خادىملىرىمىز تەرىپىدىن ئەمەلدىن قالدۇرۇلدى. كەچۈرۈڭ.",
        "en": f"Your order {REF} has been cancelled by our staff. Sorry for the inconvenience.",
    }
    assert render_order_cancelled("en", REF, "cancelled_by_buyer") == (
        f"Your order {REF} has been cancelled at your request."
    )


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_unknown_reason_uses_generic_wording(locale: Locale) -> None:
    assert render_order_cancelled(locale, REF, "x") == render_order_cancelled(locale, REF, "y")


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_every_text_to_a_mainland_number_is_signed_in_brackets(locale: Locale) -> None:
    """Chinese carriers require 【Caravan】 first in every text to a +86 number, whatever its
    language; the bodies are unsigned."""
    body = render_order_cancelled(locale, REF, "expired")
    assert "Caravan" not in body
    assert signed(locale, MAINLAND, body) == f"【Caravan】{body}"


def test_elsewhere_the_signature_is_the_locales() -> None:
    body = render_order_confirmed("en", REF, 1, "microloan")
    assert signed("en", ABROAD, body) == f"Caravan: {body}"
    assert signed("en", "+85291234567", body) == f"Caravan: {body}"  # Hong Kong: not +86
    for locale in ("zh-CN", "ug-CN"):
        body = render_order_confirmed(locale, REF, 1, "microloan")
        assert signed(locale, ABROAD, body) == f"【Caravan】{body}"


@pytest.mark.parametrize("reason", REASONS)
def test_ug_texts_are_arabic_script(reason: str) -> None:
    for text in (
        render_order_cancelled("ug-CN", REF, reason),
        render_order_confirmed("ug-CN", REF, 7000, "microloan", 6),
    ):
        assert ARABIC.search(text)
        assert not HAN.search(text)


def test_zh_texts_are_chinese() -> None:
    assert HAN.search(render_order_confirmed("zh-CN", REF, 7000, "prepaid"))
    assert HAN.search(render_order_cancelled("zh-CN", REF, "out_of_stock"))


def test_unknown_locale_falls_back_to_zh() -> None:
    locale = pick_locale("xx-YY")
    assert render_order_confirmed(locale, REF, 7000, "microloan") == render_order_confirmed(
        "zh-CN", REF, 7000, "microloan"
    )
    assert "¥70.00" in render_order_confirmed(locale, REF, 7000, "microloan")


def test_microloan_mentions_instalments() -> None:
    assert "分6期" in render_order_confirmed("zh-CN", REF, 7000, "microloan", 6)
    assert "6 ئايغا" in render_order_confirmed("ug-CN", REF, 7000, "microloan", 6)
    assert "6 monthly instalments" in render_order_confirmed("en", REF, 7000, "microloan", 6)
    assert "1 monthly instalment." in render_order_confirmed("en", REF, 7000, "microloan", 1)


def test_microloan_tells_the_first_instalment_when_known() -> None:
    first = (2334, date(2026, 12, 30))
    zh = render_order_confirmed("zh-CN", REF, 7000, "microloan", 3, first_instalment=first)
    assert "分3期按月还款，首期¥23.34于12月30日到期" in zh
    en = render_order_confirmed("en", REF, 7000, "microloan", 3, first_instalment=first)
    assert "3 monthly instalments, the first of CNY 23.34 due on 2026-12-30." in en
    ug = render_order_confirmed("ug-CN", REF, 7000, "microloan", 3, first_instalment=first)
    assert "23.34 يۈەن" in ug and "2026-12-30" in ug
    prepaid = render_order_confirmed("en", REF, 7000, "prepaid", first_instalment=first)
    assert "23.34" not in prepaid
    # Without what is repaid in all (an event of before it), the text says what it knows.
    assert "repay" not in en and "还款¥" not in zh and "ئۆسۈم" not in ug
    prepaid = render_order_confirmed("en", REF, 7000, "prepaid", to_repay=(9100, 2100))
    assert "91.00" not in prepaid and "21.00" not in prepaid


def _confirmed_loans(monthly_rate_bp: int) -> dict[Locale, str]:
    """The confirmation of order SWN-1 of 100 CNY on a 3-month microloan at this rate, in
    each locale, told the loan as the handler tells it: from payments' own schedule."""
    plan = schedule(10_000, 3, date(2026, 12, 4), monthly_rate_bp)
    first = (plan[0].amount_fen, plan[0].due)
    to_repay = (sum(i.amount_fen for i in plan), sum(i.interest_fen for i in plan))
    return {
        locale: render_order_confirmed(
            locale, "SWN-1", 10_000, "microloan", 3, first_instalment=first, to_repay=to_repay
        )
        for locale in SUPPORTED_LOCALES
    }


def test_a_microloan_with_interest_says_what_the_buyer_repays_and_the_interest() -> None:
    """A 100 CNY loan over 3 months at 10 % a month: 130 CNY to repay. The text said only the
    order's total (100 CNY) and the first instalment: never the interest nor the sum."""
    texts = _confirmed_loans(1000)
    assert (
        "Payment: microloan, CNY 130.00 to repay (CNY 30.00 interest) in 3 monthly instalments,"
        " the first of CNY 43.34 due on 2027-01-04." in texts["en"]
    )
    zh = "小额贷款，共需还款¥130.00（含利息¥30.00），分3期按月还款，首期¥43.34于1月4日到期"
    assert zh in texts["zh-CN"]
    assert (
        "ئۇششاق قەرز، قايتۇرىدىغان پۇل 130.00 يۈەن (ئۆسۈمى 30.00 يۈەن)، 3 ئايغا بۆلۈپ"
        " قايتۇرىسىز، بىرىنچى قېتىملىقى 43.34 يۈەن، 2027-01-04 كۈنى توشىدۇ" in texts["ug-CN"]
    )


def test_a_microloan_without_interest_says_so() -> None:
    texts = _confirmed_loans(0)
    assert "CNY 100.00 to repay (no interest) in 3 monthly instalments" in texts["en"]
    assert "共需还款¥100.00（免息），分3期" in texts["zh-CN"]
    assert "قايتۇرىدىغان پۇل 100.00 يۈەن (ئۆسۈمسىز)، 3 ئايغا" in texts["ug-CN"]


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_instalments_only_for_microloan_with_term(locale: Locale) -> None:
    plain = render_order_confirmed(locale, REF, 7000, "microloan")
    assert "12" not in plain
    assert "12" in render_order_confirmed(locale, REF, 7000, "microloan", 12)
    prepaid = render_order_confirmed(locale, REF, 7000, "prepaid")
    assert render_order_confirmed(locale, REF, 7000, "prepaid", 12) == prepaid


@pytest.mark.parametrize("term", [0, -3])
def test_invalid_term_rejected(term: int) -> None:
    with pytest.raises(ValueError, match="term_months"):
        render_order_confirmed("en", REF, 7000, "microloan", term)


def test_unknown_method_is_not_shown_raw() -> None:
    for locale in SUPPORTED_LOCALES:
        assert "bank_transfer_v2" not in render_order_confirmed(locale, REF, 1, "bank_transfer_v2")


def _english() -> list[str]:
    texts = [render_order_confirmed("en", REF, 123456, m, 12) for m in METHODS]
    return texts + [render_order_cancelled("en", REF, r) for r in REASONS] + _refunds("en")


def _refunds(locale: Locale) -> list[str]:
    """The refund-paid text of ``locale``, of a small amount and of a seed's largest order."""
    largest = MAX_UNIT_PRICE_FEN * MAX_QUANTITY * MAX_LINES
    return [render_refund_paid(locale, REF, fen) for fen in (1, 123456, largest)]


def test_english_texts_abroad_fit_one_gsm7_sms() -> None:
    for text in (signed("en", ABROAD, body) for body in _english()):
        info = encode_info(text)
        assert info.encoding == "GSM-7", text
        assert info.segments == 1, text


def test_english_texts_to_a_mainland_number_are_ucs2_and_stay_short() -> None:
    """【Caravan】 is not GSM-7: the whole text is UCS-2, 70 characters or parts of 67."""
    for text in (signed("en", MAINLAND, body) for body in _english()):
        info = encode_info(text)
        assert info.encoding == "UCS-2", text
        assert info.segments == (1 if len(text) <= 70 else -(-len(text) // 67)), text
        assert info.segments <= 3, text


def test_chinese_texts_fit_one_sms() -> None:
    texts = [render_order_confirmed("zh-CN", REF, 123456, m, 12) for m in METHODS]
    texts += [render_order_cancelled("zh-CN", REF, r) for r in REASONS] + _refunds("zh-CN")
    for text in texts:
        assert encode_info(signed("zh-CN", MAINLAND, text)).segments == 1, text


def test_uyghur_texts_stay_short() -> None:
    texts = [render_order_confirmed("ug-CN", REF, 123456, m, 12) for m in METHODS]
    texts += [render_order_cancelled("ug-CN", REF, r) for r in REASONS] + _refunds("ug-CN")
    for text in texts:
        assert encode_info(signed("ug-CN", MAINLAND, text)).segments <= 3, text


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_a_refund_paid_says_the_order_and_the_money_in_the_buyer_s_words(locale: Locale) -> None:
    text = render_refund_paid(locale, REF, 3500)
    assert REF in text and format_money(locale, 3500) in text
    script = {"zh-CN": HAN, "ug-CN": ARABIC}.get(locale)
    assert script is None or script.search(text.replace(REF, "")), text
    assert (
        text
        == {
            "zh-CN": f"您的订单{REF}的退款¥35.00已退还给您。",
            "ug-CN": f"{REF} نومۇرلۇق بۇيرۇتمىڭىزنىڭ 35.00 يۈەن پۇلى سىزگە قايتۇرۇلدى.",
            "en": f"Your refund of CNY 35.00 for order {REF} has been paid.",
        }[locale]
    )


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_ref_with_braces_is_rendered_verbatim(locale: Locale) -> None:
    ref = "A{reason}{0}"
    assert ref in render_order_cancelled(locale, ref, "out_of_stock")
    assert ref in render_order_cancelled(locale, ref, "nope")
    assert ref in render_order_confirmed(locale, ref, 1, "microloan", 3)
    assert ref in render_refund_paid(locale, ref, 1)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_confirmed_lists_items(locale: Locale) -> None:
    text = render_order_confirmed(locale, REF, 9800, "prepaid", items=[("Honey", 2), ("Fig", 1)])
    assert "Honey x2" in text and "Fig x1" in text and format_amount(9800) in text


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_seller_new_order(locale: Locale) -> None:
    text = render_new_order_for_seller(locale, REF, [("Pepper", 3)], 10500)
    assert REF in text and "Pepper x3" in text and "105.00" in text
    assert encode_info(signed(locale, MAINLAND, text)).segments <= 2


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("stage", ["upcoming", "today", "overdue"])
def test_instalment_reminders(locale: Locale, stage: InstalmentStage) -> None:
    text = render_instalment(locale, stage, REF, 2, 9000, date(2026, 12, 31))
    assert REF in text and "90.00" in text and "2" in text
    if stage != "today":
        assert ("12月31日" if locale == "zh-CN" else "2026-12-31") in text
    if locale == "ug-CN":
        assert ARABIC.search(text) and not HAN.search(text)
    if locale == "en":
        assert encode_info(signed(locale, ABROAD, text)).encoding == "GSM-7"
    assert encode_info(signed(locale, MAINLAND, text)).segments <= 3


def test_the_chinese_overdue_text_says_the_instalment_was_due_that_day_and_is_overdue() -> None:
    """An instalment is overdue from the day after its due date: the text said it went overdue
    on that date ("已于12月31日逾期"), where the English and Uyghur say it was due on it."""
    text = render_instalment("zh-CN", "overdue", REF, 2, 9000, date(2026, 12, 31))
    assert text == (
        f"您的订单{REF}第2期还款¥90.00已于12月31日到期，现已逾期，请尽快还款，如有困难请联系我们。"
    )


def test_reminder_stages_are_worded_differently() -> None:
    for locale in SUPPORTED_LOCALES:
        texts = {
            render_instalment(locale, s, REF, 1, 100, date(2026, 1, 1))
            for s in ("upcoming", "today", "overdue")
        }
        assert len(texts) == 3


def test_product_name_falls_back() -> None:
    names = {"zh-CN": "蜂蜜", "en": "Honey"}
    assert product_name("en", names, "SKU") == "Honey"
    assert product_name("ug-CN", names, "SKU") == "蜂蜜"
    assert product_name("ug-CN", {}, "SKU") == "SKU"


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_a_buyers_text_of_more_lines_lists_three_and_counts_them_all(locale: Locale) -> None:
    """The buyer knows what they ordered; the seller is to prepare it: its text lists all."""
    items = [(f"P{n}", n) for n in range(1, 17)]
    text = render_order_confirmed(locale, REF, 9800, "prepaid", items=items)
    assert "P1 x1" in text and "P3 x3" in text and "P4" not in text
    said = {"zh-CN": "等16种商品", "ug-CN": "قاتارلىق 16 خىل مەھسۇلات", "en": "and 13 more"}
    assert said[locale] in text
    seller = render_new_order_for_seller(locale, REF, items, 9800)
    assert all(f"P{n} x{n}" in seller for n in range(1, 17)) and said[locale] not in seller


DEMO_PRODUCTS = SeedFile.load(DEMO_SEED).products


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("quantity", [1, 10, 99])
def test_a_sellers_text_lists_every_line_of_a_ten_line_order(locale: Locale, quantity: int) -> None:
    """The demo's 10 products, each line listed for the seller to prepare (it listed 3 and
    "and 7 more", saying nowhere what they were), its name whole; a name cut only where the
    whole ones would not fit (99 of each in Uyghur: 403 units), not a line left out."""
    items = [(product_name(locale, p.name, p.sku), quantity) for p in DEMO_PRODUCTS]
    assert len(items) == 10
    amount = sum(quantity * p.unit_price_fen for p in DEMO_PRODUCTS)
    text = render_new_order_for_seller(locale, REF, items, amount)
    assert text.count(f" x{quantity}") == 10, text
    if (locale, quantity) == ("ug-CN", 99):
        assert "…" in text
    else:
        assert all(f"{name} x{quantity}" in text for name, _ in items), text
    for to in (MAINLAND, ABROAD):
        assert encode_info(signed(locale, to, text)).segments <= MAX_SEGMENTS


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_a_sellers_text_of_fifty_lines_lists_what_fits_and_counts_the_rest(locale: Locale) -> None:
    """50 lines of the demo's names: as many as fit within the bound, names cut to let more
    fit, and how many there are in all."""
    names = [product_name(locale, p.name, p.sku) for p in DEMO_PRODUCTS]
    items = [(f"{names[n % len(names)]} {n}", 10) for n in range(MAX_LINES)]
    text = render_new_order_for_seller(locale, REF, items, 123_400)
    listed = text.count(" x10")
    assert 3 < listed < MAX_LINES, text
    more = {
        "zh-CN": f"x10等{MAX_LINES}种商品",
        "ug-CN": f"x10 قاتارلىق {MAX_LINES} خىل مەھسۇلات",
        "en": f"x10 and {MAX_LINES - listed} more",
    }
    assert more[locale] in text, text
    for to in (MAINLAND, ABROAD):
        assert encode_info(signed(locale, to, text)).segments <= MAX_SEGMENTS


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_the_demos_names_are_listed_whole(locale: Locale) -> None:
    """The demo's longest name (35 characters) and a 3-line order: nothing to cut."""
    longest = "غۇلجا قارا ھەسەل ھەرە بېلى 500 گرام"
    items = [(longest, 3), ("Shawan cayenne pepper 1 kg", 2), ("沙湾辣椒 1公斤", 1)]
    for text in (
        render_order_confirmed(locale, REF, 9800, "microloan", 3, items, (3300, date(2027, 1, 4))),
        render_new_order_for_seller(locale, REF, items, 9800),
    ):
        assert f"{longest} x3" in text and "沙湾辣椒 1公斤 x1" in text


LONG_NAMES = {
    "Han": "沙湾辣椒" * 100,
    "Arabic": "ساۋەن لازىسى" * 100,
    "emoji": "🍯" * 200,
    "accents": "e\u0301" * 300,
    "GSM-7": "Shawan [cayenne] pepper" * 20,
}


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
@pytest.mark.parametrize("name", LONG_NAMES.values(), ids=LONG_NAMES.keys())
@pytest.mark.parametrize("lines", [1, 3, 16, MAX_LINES])
def test_every_text_of_any_order_stays_within_its_bound(
    locale: Locale, name: str, lines: int
) -> None:
    """The longest of each text: a 64-character reference, ``lines`` lines of the longest
    quantity and of names of any length and script, the largest total a seed allows on a
    12-month loan at the highest interest. A 16-line order in Uyghur was 11 UCS-2 parts, 50
    lines 29, a 5,000-character name 76: every part billed, and carriers join only a few."""
    ref = "R" * 64
    total = MAX_UNIT_PRICE_FEN * MAX_QUANTITY * MAX_LINES
    plan = schedule(total, MAX_TERM_MONTHS, date(2027, 12, 4), MAX_MONTHLY_INTEREST_BP)
    owed = (sum(i.amount_fen for i in plan), sum(i.interest_fen for i in plan))
    items = [(f"{n}{name}", MAX_QUANTITY) for n in range(lines)]
    texts = [
        render_order_confirmed(
            locale, ref, total, m, MAX_TERM_MONTHS, items, (plan[0].amount_fen, plan[0].due), owed
        )
        for m in METHODS
    ]
    texts.append(render_new_order_for_seller(locale, ref, items, total))
    texts += [render_order_cancelled(locale, ref, r) for r in REASONS]
    texts += [render_order_cancelled(locale, ref, r, [n for n, _ in items]) for r in REASONS]
    texts += [
        render_instalment(locale, s, ref, MAX_TERM_MONTHS, plan[0].amount_fen, plan[0].due)
        for s in get_args(InstalmentStage)
    ]
    for body in texts:
        for to in (MAINLAND, ABROAD):
            assert encode_info(signed(locale, to, body)).segments <= MAX_SEGMENTS, body

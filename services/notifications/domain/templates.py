"""Buyer-facing SMS texts for order events, in the buyer's locale.

Supported locales: ``zh-CN`` (default), ``ug-CN`` (Uyghur in Arabic script) and
``en``. Messages are kept short (one SMS where practical), and none takes more than
:data:`MAX_SEGMENTS` parts, however long its order. The ``render_*`` functions give a
text's body; :func:`signed` puts the signature before it, by destination: ``【Caravan】`` on
every text to a mainland China number (``+86``), whatever its language, as Chinese carriers
require (a text without it risks being refused), and elsewhere the locale's, ``【Caravan】``
(Chinese and Uyghur) or ``Caravan: `` (English, which keeps English texts within GSM-7).
Money is rendered from integer fen without floating point. Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Final, Literal, get_args

from services.notifications.domain.sms import clipped, encode_info
from shared.events.orders import CancelReason, Locale, PaymentMethod

DEFAULT_LOCALE: Final[Locale] = "zh-CN"
"""Locale used when the buyer's locale is missing or not supported."""

SUPPORTED_LOCALES: Final[tuple[Locale, ...]] = ("zh-CN", "ug-CN", "en")
"""All locales, default first."""

CANCEL_REASONS: Final[tuple[str, ...]] = get_args(CancelReason)
"""Cancellation reason codes that have a specific wording; others get a generic one."""

PAYMENT_METHODS: Final[tuple[str, ...]] = get_args(PaymentMethod)
"""Payment method codes that are named in confirmations; others are left unnamed."""

MAINLAND_SIGNATURE: Final[str] = "【Caravan】"
"""The signature Chinese carriers require at the start of every text to a ``+86`` number."""

_SIGNATURE: Final[dict[Locale, str]] = {
    "zh-CN": MAINLAND_SIGNATURE,
    "ug-CN": MAINLAND_SIGNATURE,
    "en": "Caravan: ",
}


def signed(locale: Locale, to: str, body: str) -> str:
    """The text of ``body`` (rendered in ``locale``) sent to ``to``: the signature first,
    :data:`MAINLAND_SIGNATURE` for a mainland China number (``+86``) whatever the locale,
    the locale's elsewhere. An English text to China is then UCS-2 (70-character SMS,
    67-character parts), where ``Caravan: `` kept it GSM-7."""
    sign = MAINLAND_SIGNATURE if to.startswith("+86") else _SIGNATURE[locale]
    return f"{sign}{body}"


_METHOD_NAMES: Final[dict[Locale, dict[str, str]]] = {
    "zh-CN": {
        "microloan": "小额贷款",
        "prepaid": "预付款",
    },
    "ug-CN": {
        "microloan": "ئۇششاق قەرز",
        "prepaid": "ئالدىن تۆلەش",
    },
    "en": {
        "microloan": "microloan",
        "prepaid": "prepaid",
    },
}

# "Order {ref} was cancelled because {reason}." frame, per locale.
_CANCELLED_BECAUSE: Final[dict[Locale, str]] = {
    "zh-CN": "您的订单{ref}已取消，原因：{reason}。",
    "ug-CN": "{ref} نومۇرلۇق بۇيرۇتمىڭىز ئەمەلدىن قالدۇرۇلدى، سەۋەبى: {reason}.",
    "en": "Your order {ref} has been cancelled because {reason}.",
}

# Plain-words reasons that fit the frame above.
_REASONS: Final[dict[Locale, dict[str, str]]] = {
    "zh-CN": {
        "unknown_sku": "商品不存在",
        "out_of_stock": "商品库存不足",
        "out_of_season": "商品已过季",
        "credit_declined": "贷款申请未获批准",
        "payment_failed": "付款未成功",
    },
    "ug-CN": {
        "unknown_sku": "مەھسۇلات تېپىلمىدى",
        "out_of_stock": "مال قالمىدى",
        "out_of_season": "مەھسۇلاتنىڭ پەسلى ئۆتۈپ كەتتى",
        "credit_declined": "قەرز ئىلتىماسىڭىز تەستىقلانمىدى",
        "payment_failed": "پۇل تۆلەش مەغلۇپ بولدى",
        "expired": "ۋاقتى ئۆتۈپ كەتتى",
    },
    "en": {
        "unknown_sku": "the product could not be found",
        "out_of_stock": "the product is out of stock",
        "out_of_season": "the product is out of season",
        "credit_declined": "your credit application was declined",
        "payment_failed": "the payment did not go through",
    },
}

# The reasons of a product, naming it ({names}: the products listed, {is_}: "is" or "are"
# as they are one or more), to fit the frame above too.
_NAMED_REASONS: Final[dict[Locale, dict[str, str]]] = {
    "zh-CN": {
        "unknown_sku": "商品不存在（{names}）",
        "out_of_stock": "商品库存不足（{names}）",
        "out_of_season": "商品已过季（{names}）",
    },
    "ug-CN": {
        "unknown_sku": "مەھسۇلات تېپىلمىدى ({names})",
        "out_of_stock": "مال قالمىدى ({names})",
        "out_of_season": "مەھسۇلاتنىڭ پەسلى ئۆتۈپ كەتتى ({names})",
    },
    "en": {
        "unknown_sku": "{names} could not be found",
        "out_of_stock": "{names} {is_} out of stock",
        "out_of_season": "{names} {is_} out of season",
    },
}

# Whole sentences for reasons that read better outside the frame; "" is the
# generic wording for reason codes that have no specific text.
_CANCELLED_SENTENCES: Final[dict[Locale, dict[str, str]]] = {
    "zh-CN": {
        # Not "已超时" (timed out): read as the buyer's delay, as of an order not paid in time,
        # where the order waited on us (a backlog, a service down) past the saga's deadline.
        "expired": "您的订单{ref}未能及时完成处理，系统已自动取消。",
        "cancelled_by_buyer": "您的订单{ref}已按您的要求取消。",
        "cancelled_by_operator": "您的订单{ref}已由工作人员取消。",
        "": "您的订单{ref}因故已取消。",
    },
    "ug-CN": {
        "cancelled_by_buyer": "{ref} نومۇرلۇق بۇيرۇتمىڭىز تەلىپىڭىز بويىچە ئەمەلدىن قالدۇرۇلدى.",
        "cancelled_by_operator": (
            "{ref} نومۇرلۇق بۇيرۇتمىڭىز خادىملىرىمىز تەرىپىدىن ئەمەلدىن قالدۇرۇلدى."
        ),
        "": "{ref} نومۇرلۇق بۇيرۇتمىڭىز مەلۇم سەۋەب بىلەن ئەمەلدىن قالدۇرۇلدى.",
    },
    "en": {
        "expired": "Your order {ref} could not be completed in time and has been cancelled.",
        "cancelled_by_buyer": "Your order {ref} has been cancelled at your request.",
        "cancelled_by_operator": "Your order {ref} has been cancelled by our staff.",
        "": "Your order {ref} could not be completed and has been cancelled.",
    },
}

_APOLOGY: Final[dict[Locale, str]] = {
    "zh-CN": "给您带来不便，敬请谅解。",
    "ug-CN": "كەچۈرۈڭ.",
    "en": "Sorry for the inconvenience.",
}


def pick_locale(value: str | None) -> Locale:
    """Map a buyer's locale preference to a supported :data:`Locale`.

    Matching is on the primary language subtag, case-insensitive, accepting
    ``-`` or ``_`` separators and a POSIX ``.charset`` suffix: ``ug``,
    ``ug_CN``, ``ug-Arab-CN`` give ``ug-CN``; ``en``, ``en-US``,
    ``en_GB.UTF-8`` give ``en``. Anything else, including ``None`` and the
    empty string, falls back to :data:`DEFAULT_LOCALE` (``zh-CN``).
    """
    if value is None:
        return DEFAULT_LOCALE
    primary = value.strip().split(".", 1)[0].replace("_", "-").split("-", 1)[0].lower()
    if primary == "ug":
        return "ug-CN"
    if primary == "en":
        return "en"
    return DEFAULT_LOCALE


def format_amount(fen: int) -> str:
    """Render an amount in fen as yuan with exactly two decimals, e.g. 3500 -> ``"35.00"``.

    Uses integer arithmetic only; a negative amount gets a leading ``-``.
    """
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{cents:02d}"


def format_money(locale: Locale, fen: int) -> str:
    """Render an amount in fen as a price for ``locale``.

    ``zh-CN``: ``¥70.00``; ``ug-CN``: ``70.00 يۈەن``; ``en``: ``CNY 70.00``.
    """
    amount = format_amount(fen)
    if locale == "ug-CN":
        return f"{amount} يۈەن"
    if locale == "en":
        return f"CNY {amount}"
    return f"¥{amount}"


def _instalments(
    locale: Locale,
    term_months: int,
    first: tuple[int, date] | None,
    to_repay: tuple[int, int] | None,
) -> str:
    """Phrase for repaying a microloan in ``term_months`` monthly instalments: what the
    buyer repays in all and the interest in it (fen, fen) when known, and what the first
    instalment is (amount in fen, due date) when known."""
    money, day = (format_money(locale, first[0]), _date(locale, first[1])) if first else ("", "")
    owed, interest = (
        (format_money(locale, to_repay[0]), format_money(locale, to_repay[1]))
        if to_repay
        else ("", "")
    )
    free = to_repay is not None and to_repay[1] == 0
    if locale == "ug-CN":
        phrase = f"{term_months} ئايغا بۆلۈپ قايتۇرىسىز"
        if to_repay:
            cost = "ئۆسۈمسىز" if free else f"ئۆسۈمى {interest}"
            phrase = f"قايتۇرىدىغان پۇل {owed} ({cost})، {phrase}"
        return f"{phrase}، بىرىنچى قېتىملىقى {money}، {day} كۈنى توشىدۇ" if first else phrase
    if locale == "en":
        plural = "" if term_months == 1 else "s"
        phrase = f"{term_months} monthly instalment{plural}"
        if to_repay:
            cost = "no interest" if free else f"{interest} interest"
            phrase = f"{owed} to repay ({cost}) in {phrase}"
        return f"{phrase}, the first of {money} due on {day}" if first else phrase
    phrase = f"分{term_months}期按月还款"
    if to_repay:
        cost = "免息" if free else f"含利息{interest}"
        phrase = f"共需还款{owed}（{cost}），{phrase}"
    return f"{phrase}，首期{money}于{day}到期" if first else phrase


def render_order_confirmed(
    locale: Locale,
    order_ref: str,
    total_fen: int,
    method: str,
    term_months: int | None = None,
    items: Sequence[tuple[str, int]] = (),
    first_instalment: tuple[int, date] | None = None,
    to_repay: tuple[int, int] | None = None,
) -> str:
    """Render the body of the "order confirmed" SMS (:func:`signed` signs it).

    Args:
        locale: buyer's locale (see :func:`pick_locale`).
        order_ref: order reference shown to the buyer, included verbatim.
        total_fen: order total in fen (1/100 yuan).
        method: payment method code; codes in :data:`PAYMENT_METHODS` are named
            in the text, any other code is left out rather than shown raw.
        term_months: for ``method == "microloan"``, the number of monthly
            instalments to mention; ignored for other methods.
        items: ``(product name, quantity)`` pairs to list, when known.
        first_instalment: for microloans, the first instalment's amount in fen and due
            date, when known.
        to_repay: for microloans, what the buyer repays in all (principal and interest)
            and the interest in it, in fen, when known (the loan's schedule): the one figure
            a lender must state. Unknown (an event of before the schedule): not said.

    Raises:
        ValueError: if ``term_months`` is given and is less than 1.
    """
    if term_months is not None and term_months < 1:
        raise ValueError(f"term_months must be at least 1, got {term_months}")

    money = format_money(locale, total_fen)
    method_name = _METHOD_NAMES[locale].get(method)
    payment = method_name
    if method_name is not None and method == "microloan" and term_months is not None:
        separator = "، " if locale == "ug-CN" else ("，" if locale == "zh-CN" else ", ")
        terms = _instalments(locale, term_months, first_instalment, to_repay)
        payment = f"{method_name}{separator}{terms}"

    def text(listed: str) -> str:
        if locale == "ug-CN":
            paid = f" تۆلەش ئۇسۇلى: {payment}." if payment else ""
            what = f": {listed}." if listed else "."
            done = f"{order_ref} نومۇرلۇق بۇيرۇتمىڭىز جەزملەشتۈرۈلدى{what}"
            return f"{done} جەمئىي: {money}.{paid} رەھمەت!"
        if locale == "en":
            paid = f" Payment: {payment}." if payment else ""
            what = f": {listed}." if listed else "."
            return f"Your order {order_ref} is confirmed{what} Total: {money}.{paid} Thank you!"
        paid = f"，支付方式：{payment}" if payment else ""
        what = f"（{listed}）" if listed else ""
        return f"您的订单{order_ref}{what}已确认，金额{money}{paid}。感谢惠顾！"

    return _listing(locale, items, text, _BUYER_LINES)


def render_order_cancelled(
    locale: Locale, order_ref: str, reason: str, products: Sequence[str] = ()
) -> str:
    """Render the body of the "order cancelled" SMS (:func:`signed` signs it).

    Args:
        locale: buyer's locale (see :func:`pick_locale`).
        order_ref: order reference shown to the buyer, included verbatim.
        reason: cancellation reason code; codes in :data:`CANCEL_REASONS` are
            explained in plain words, any other code gets a generic wording.
        products: the names of the products a reason of a product (``unknown_sku``,
            ``out_of_stock``, ``out_of_season``) is of (:func:`product_name`), named in the
            text: the first :data:`_BUYER_LINES`, the others counted, each name cut only
            as far as keeps it within :data:`MAX_SEGMENTS`. None given (an event of before
            2026-12-06), or another reason: the text it was before ("the product").

    An apology is appended unless the buyer cancelled the order themselves.
    """
    named = _NAMED_REASONS[locale].get(reason) if products else None
    if named is None:
        return _cancelled(locale, order_ref, reason, _REASONS[locale].get(reason))
    be = "is" if len(products) == 1 else "are"

    def text(listed: str) -> str:
        return _cancelled(locale, order_ref, reason, named.format(names=listed, is_=be))

    return _listing(locale, [(name, None) for name in products], text, _BUYER_LINES)


def _cancelled(locale: Locale, order_ref: str, reason: str, phrase: str | None) -> str:
    """The cancellation of ``order_ref`` for ``reason``, said by ``phrase`` in the frame
    (None: the reason has none), or by the reason's own sentence, or generically."""
    sentences = _CANCELLED_SENTENCES[locale]
    if reason in sentences:
        sentence = sentences[reason].format(ref=order_ref)
    elif phrase is not None:
        sentence = _CANCELLED_BECAUSE[locale].format(ref=order_ref, reason=phrase)
    else:
        sentence = sentences[""].format(ref=order_ref)
    apology = "" if reason == "cancelled_by_buyer" else _APOLOGY[locale]
    separator = "" if locale == "zh-CN" or not apology else " "
    return f"{sentence}{separator}{apology}"


def render_refund_paid(locale: Locale, order_ref: str, amount_fen: int) -> str:
    """Render the body of the "refund paid" SMS: what the buyer was owed back (a charge whose
    void the gateway refused, or what they repaid on a loan voided: the order cancelled, or
    refunded after the sale) was paid to them, by hand (:func:`signed` signs it)."""
    money = format_money(locale, amount_fen)
    if locale == "ug-CN":
        return f"{order_ref} نومۇرلۇق بۇيرۇتمىڭىزنىڭ {money} پۇلى سىزگە قايتۇرۇلدى."
    if locale == "en":
        return f"Your refund of {money} for order {order_ref} has been paid."
    return f"您的订单{order_ref}的退款{money}已退还给您。"


MAX_SEGMENTS: Final[int] = 6
"""The most SMS parts a text takes, signed, whatever its order: any ``order_ref`` (up to 64
characters), any number of lines, any product names, the largest amounts a seed allows
(``shared.seed.MAX_UNIT_PRICE_FEN``) at the highest interest. 6 UCS-2 parts are 402
characters (GSM-7 parts hold more), within what carriers and handsets join into one message
(about 4 to 10 parts), each part billed. Its longest text, a microloan's confirmation in
Uyghur with a 64-character reference and the largest amounts, is 345 characters before it
lists a line; :func:`_listing` lists what fits in the rest."""

_BUYER_LINES: Final[int] = 3
"""How many of an order's lines a buyer's text lists, the others counted, not listed: the
buyer knows what they ordered. A seller's text lists all that fit, what it is to prepare."""

_NAME_UNITS: Final[tuple[int, int]] = (40, 16)
"""A product's name is listed whole up to the first so many UCS-2 units (the demo's longest is
35) and cut past it, or past fewer, down to the second, where that lets more lines fit."""

_MORE: Final[dict[Locale, str]] = {
    "zh-CN": "{listed}等{count}种商品",
    "ug-CN": "{listed} قاتارلىق {count} خىل مەھسۇلات",
    "en": "{listed} and {more} more",
}


Item = tuple[str, int | None]
"""A product's name and the quantity of it to say (None: the name alone)."""


def format_items(locale: Locale, items: Sequence[Item], lines: int, name_units: int) -> str:
    """``[("Honey", 2), ("Pepper", 1)]`` as ``Honey x2, Pepper x1`` (``、``/``، `` joined;
    a name of no quantity alone): the first ``lines`` lines, each name cut past
    ``name_units`` UCS-2 units (:func:`~services.notifications.domain.sms.clipped`), and how
    many there are in all when there are more (``... and 47 more``, ``...等50种商品``)."""
    joiner = {"zh-CN": "、", "ug-CN": "، ", "en": ", "}[locale]
    mark = "..." if locale == "en" else "…"  # "…" is not GSM-7
    listed = joiner.join(
        clipped(name, name_units, mark) + ("" if quantity is None else f" x{quantity}")
        for name, quantity in items[:lines]
    )
    if len(items) <= lines:
        return listed
    return _MORE[locale].format(listed=listed, count=len(items), more=len(items) - lines)


def _listing(locale: Locale, items: Sequence[Item], text: Callable[[str], str], lines: int) -> str:
    """``text`` of the order's ``items`` listed as fully as keeps it, signed, within
    :data:`MAX_SEGMENTS`: as many of its first ``lines`` lines as fit, the others counted,
    each name cut (:data:`_NAME_UNITS`) only as far as lets that many fit; else 1 line.
    Measured with the mainland signature, as UCS-2: a text abroad signed ``Caravan: `` (as
    long) in GSM-7 takes no more parts (its parts hold 153 septets, an escaped character 2)."""

    def listing(listed: int, name_units: int) -> str:
        return text(format_items(locale, items, listed, name_units))

    def fits(body: str) -> bool:
        return encode_info(MAINLAND_SIGNATURE + body).segments <= MAX_SEGMENTS

    whole, least = _NAME_UNITS
    for listed in range(min(lines, len(items)), 0, -1):
        if fits(shortest := listing(listed, least)):
            # The longest names that fit (the names cut at ``least`` do: the last tried).
            for name_units in range(whole, least, -1):
                if fits(body := listing(listed, name_units)):
                    return body
            return shortest
    return listing(1, least)


def product_name(locale: Locale, names: Mapping[str, str], sku: str) -> str:
    """A product's name in ``locale``, else in ``zh-CN``, else the SKU itself."""
    return names.get(locale) or names.get(DEFAULT_LOCALE) or sku


def render_new_order_for_seller(
    locale: Locale, order_ref: str, items: Sequence[tuple[str, int]], amount_fen: int
) -> str:
    """Render the body of the "new order" SMS to a seller: what to prepare, every line that
    fits within :data:`MAX_SEGMENTS` (the others counted), and what it is worth
    (:func:`signed` signs it)."""
    money = format_money(locale, amount_fen)

    def text(what: str) -> str:
        if locale == "ug-CN":
            return f"يېڭى بۇيرۇتما {order_ref}: {what}، جەمئىي {money}. مالنى ۋاقتىدا تەييارلاڭ."
        if locale == "en":
            return f"New order {order_ref}: {what}, worth {money}. Please prepare the goods."
        return f"新订单{order_ref}：{what}，货款{money}。请及时备货。"

    return _listing(locale, items, text, len(items))


InstalmentStage = Literal["upcoming", "today", "overdue"]


def _date(locale: Locale, day: date) -> str:
    return f"{day.month}月{day.day}日" if locale == "zh-CN" else day.isoformat()


def render_instalment(
    locale: Locale,
    stage: InstalmentStage,
    order_ref: str,
    number: int,
    amount_fen: int,
    due: date,
) -> str:
    """Render a microloan reminder: instalment ``number`` of ``order_ref`` is coming due,
    due today, or overdue (the body: :func:`signed` signs it). Overdue texts stay polite and
    offer help."""
    money = format_money(locale, amount_fen)
    day = _date(locale, due)
    if locale == "ug-CN":
        subject = (
            f"{order_ref} نومۇرلۇق بۇيرۇتمىڭىزنىڭ {number}-قېتىملىق قەرز قايتۇرۇش پۇلى {money}"
        )
        if stage == "upcoming":
            return f"ئەسكەرتىش: {subject}، {day} كۈنى توشىدۇ. ۋاقتىدا قايتۇرۇڭ."
        if stage == "today":
            return f"{subject} بۈگۈن توشىدۇ. ۋاقتىدا قايتۇرۇڭ."
        return (
            f"{subject} {day} كۈنى توشتى. تېزراق قايتۇرۇڭ، قىيىنچىلىقىڭىز بولسا"
            " بىز بىلەن ئالاقىلىشىڭ."
        )
    if locale == "en":
        subject = f"instalment {number} of order {order_ref}, {money},"
        if stage == "upcoming":
            return f"Reminder: {subject} is due on {day}."
        if stage == "today":
            return f"Reminder: {subject} is due today."
        return (
            f"{subject[0].upper()}{subject[1:]} was due on {day} and is overdue."
            " Please repay soon, or contact us if you need help."
        )
    subject = f"您的订单{order_ref}第{number}期还款{money}"
    if stage == "upcoming":
        return f"温馨提示：{subject}将于{day}到期，请按时还款。"
    if stage == "today":
        return f"温馨提示：{subject}今天到期，请按时还款。"
    return f"{subject}已于{day}到期，现已逾期，请尽快还款，如有困难请联系我们。"

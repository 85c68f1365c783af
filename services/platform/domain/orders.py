"""A platform's order, and how it becomes our ``platform.order_requested``. Pure.

The platform's order API answers with a :class:`PlatformOrder`. Its SKUs and its buyer are
the platform's; the app's mapping table says which of ours they are. Nothing is invented:
a SKU or buyer without a mapping makes a :class:`Problem` for operations instead.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from shared.api import field_errors
from shared.events.envelope import NoNul
from shared.events.orders import (
    E164_PATTERN,
    Delivery,
    Locale,
)
from shared.events.platform import PlatformOrderRequested
from shared.phones import as_e164, as_written

ProblemKind = Literal[
    "unmapped_sku",
    "unmapped_buyer",
    "invalid_order",
    "unknown_status",
    "rejected",
    "cancelled_on_platform",
    "refund_requested",
    "fulfilled_after_cancelled",
    "changed_after_placed",
    "paid_after_cancelled",
    "mapped_to_unknown_sku",
]
"""Why a pushed order needs operations: its SKUs or buyer have no mapping, it cannot be read,
it was never placed and the platform now says a status the adapter does not know (paid or
not, operations find out), the orders service refused what the adapter published
(``rejected``: a push again does not mend it), the platform cancelled it after we placed
it (a sale to undo by hand), or its buyer asked the platform for a refund after we placed it
(a refund to agree to or refuse there, and perhaps goods to stop), or it says an order we
cancelled is being fulfilled (goods shipped that Caravan holds no stock or payment for), or
the platform changed its items, delivery or buyer after we placed it (the change not
applied: :func:`changed_after_placed`), or it was read paid after a read of it cancelled,
before it was placed (an older answer decided later, as cancelled is final: not placed), or
we cancelled it ``unknown_sku``, a mapping of its SKUs naming one inventory does not have
(:func:`mapped_to_unknown_sku`)."""
PlatformStatus = Literal["wait_pay", "paid", "cancelled", "refunding", "fulfilment"]
"""What a platform's status means to the adapter: only a paid order is placed with us; a
cancelled one (before payment, or closed after it with the buyer's money given back) is
nothing to place, and for an order placed with us a sale to undo by hand unless we cancelled
it first; a refunding one (the buyer asked for the money back, the platform waits on the
seller or on goods returned) is nothing to place yet, and for an order placed with us a
refund to settle by hand unless we cancelled it first (the platform giving the money back
that our cancellation owes); a step of fulfilment (shipped, finished) is one a platform moves
a paid order on to, nothing to do for an order placed with us."""
STATUSES: Mapping[str, PlatformStatus] = {
    "wait_pay": "wait_pay",
    "paid": "paid",
    "cancelled": "cancelled",
    "refunding": "refunding",
    "shipped": "fulfilment",
    "delivered": "fulfilment",
    "finished": "fulfilment",
    # The Taobao / Tmall open platform's trade statuses
    "TRADE_NO_CREATE_PAY": "wait_pay",  # no Alipay trade created yet
    "WAIT_BUYER_PAY": "wait_pay",
    "PAY_PENDING": "wait_pay",  # a card payment being confirmed
    "WAIT_PRE_AUTH_CONFIRM": "wait_pay",  # a "0 yuan" (Yu'e Bao) purchase contract pending
    "PAID_FORBID_CONSIGN": "wait_pay",  # paid, not to be shipped yet (a group buy forming)
    "WAIT_SELLER_SEND_GOODS": "paid",
    "TRADE_CLOSED_BY_TAOBAO": "cancelled",  # closed before payment
    "TRADE_CLOSED": "cancelled",  # closed after payment: the buyer's money given back
    # and its refund statuses (an order's ``refund_status`` there) of a refund under way
    "WAIT_SELLER_AGREE": "refunding",  # asked for, the seller to agree or refuse
    "WAIT_BUYER_RETURN_GOODS": "refunding",  # agreed, the goods to come back
    "WAIT_SELLER_CONFIRM_GOODS": "refunding",  # sent back, the seller to confirm them
    "SELLER_CONSIGNED_PART": "fulfilment",
    "WAIT_BUYER_CONFIRM_GOODS": "fulfilment",
    "TRADE_BUYER_SIGNED": "fulfilment",
    "TRADE_FINISHED": "fulfilment",
}
"""The one place saying what each status a platform names means. Any other status (closed,
on hold: perhaps the buyer's money given back after payment) the adapter does not know: a
problem even for an order placed, since it may be a sale to undo by hand
(:func:`unknown_status`)."""


def meaning(status: str) -> PlatformStatus | None:
    """What the platform's ``status`` means to the adapter (:data:`STATUSES`), None if it
    does not know."""
    return STATUSES.get(status)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class PlatformBuyer(_Model):
    id: str = Field(min_length=1, max_length=128)
    # As the platform writes it (national format, spaces...: read by ``to_request``), or as
    # a JSON number.
    phone: str | None = Field(None, coerce_numbers_to_str=True)


class PlatformItem(_Model):
    sku: str = Field(min_length=1, max_length=128)
    quantity: int = Field(ge=1, strict=True)


class PlatformOrder(_Model, NoNul):
    """What a platform's order API answers for one order (no text holding NUL, which our
    ``order.requested`` may not carry)."""

    order_id: str = Field(min_length=1, max_length=64)
    status: str = Field(min_length=1, max_length=64)
    """One of :data:`STATUSES`, or another the platform moves an order on to (on hold...),
    which is read all the same: see :func:`unknown_status`."""
    buyer: PlatformBuyer
    items: list[PlatformItem] = Field(min_length=1)
    delivery: Delivery | None = None


class SkuMapping(_Model):
    sku: str = Field(min_length=1, max_length=64)


class BuyerMapping(_Model):
    """Our buyer a platform's buyer is, with the phone and the locale of their texts where
    the mapping says them. A locale not said (None) is left out of the order placed, so the
    buyer's texts are in the one a seed gave them, else zh-CN: a mapping's default zh-CN
    overrode the seeded locale, the buyer's own word, where nobody had said otherwise."""

    buyer_id: str = Field(min_length=1, max_length=64)
    phone: Annotated[str | None, BeforeValidator(as_written)] = Field(None, pattern=E164_PATTERN)
    locale: Locale | None = None


@dataclass(frozen=True)
class Problem:
    """``errors``: of an ``invalid_order``, each field of our request at fault,
    ``{field, message}`` as a 422 says them, never a value (the push's answer names them)."""

    kind: ProblemKind
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list, compare=False)


def unmapped_buyer(platform_buyer_id: str) -> str:
    """An ``unmapped_buyer`` problem's detail: the platform's buyer id, which an erasure of the
    buyer finds it by (``caravan buyers erase``) and replaces with :data:`ERASED_BUYER`."""
    return f"platform buyer {platform_buyer_id!r} has no mapping"


ERASED_BUYER = "platform buyer (erased) has no mapping"


def unknown_status(order: PlatformOrder, ours: str | None = None) -> Problem:
    """Why an order whose status is none of :data:`STATUSES` (or a step of fulfilment, of an
    order never placed) needs operations: never placed with us (``ours`` None), whether the
    platform took the buyer's money is not the adapter's to guess; placed (``ours``, our order
    id), it may have been refunded or closed on the platform."""
    known = ", ".join(get_args(PlatformStatus)) + ", or Taobao's names for them"
    said = f"the platform says status {order.status!r}, which the adapter does not know ({known})"
    if ours is None:
        return Problem(
            "unknown_status",
            f"{said}, for an order never placed with us: find out whether it was paid",
        )
    return Problem(
        "unknown_status",
        f"{said}, for an order placed with us (our order {ours}): if the platform refunded or"
        " closed it, the sale goes on here; cancel it, or settle the refund and the goods, by"
        " hand, then resolve this",
    )


def rejected(app: str, errors: str, standing: str | None = None) -> Problem:
    """Why an order the orders service refused (``order.rejected`` of the adapter's request,
    ``errors`` as it said them) needs operations, and how it is mended: its request is a dead
    letter of ``platform.events.v1``, which a push does not send again (docs/operations.md, A
    rejected request redriven). ``standing``: the order its order_ref names (refused as
    reused), which stands, so that the request is never placed under it."""
    said = f"the orders service refused it: {errors}"[:600]
    letter = "its request is a dead letter of platform.events.v1"
    letter = f"{letter} (`caravan dlq list --source platform/{app}`)"
    if standing is not None:
        return Problem(
            "rejected",
            f"{said}; {letter}, never placed: our order {standing} stands under this reference,"
            " so a redrive places nothing (`caravan dlq discard` closes the letter); resolve this"
            " once the platform's order is settled",
        )
    return Problem(
        "rejected",
        f"{said}; {letter}: mended and sent back (`caravan dlq redrive LETTER --value-file F`)"
        " it is placed and the platform called back; resolve this then (docs/operations.md, A"
        " rejected request redriven)",
    )


NOT_NUMBERED = "not numbered yet"
"""Our order id of a platform order placed whose ``order.placed`` the adapter has not read."""


def undone_on_platform(order: PlatformOrder, ours: str, confirmed: bool) -> Problem:
    """Why an order placed with us (``ours``, our order id) that the platform cancelled or is
    refunding (:data:`STATUSES`), and that we did not cancel first, needs operations, and what
    they can do: an order not ``confirmed`` yet they can still cancel here; a confirmed one
    Caravan cannot undo (its stock is sold, the platform's payment booked: the cancel route
    answers 409): the platform's refund of its buyer is booked with ``caravan payments
    void-sold``, the goods settled by hand."""
    refund = meaning(order.status) == "refunding"
    if refund:
        said = f"the buyer asked the platform for a refund ({order.status!r}) of our order {ours}"
    else:
        said = (
            f"cancelled on the platform ({order.status!r}) after it was placed as our order {ours}"
        )
    if confirmed:
        what = (
            ": it is confirmed here, which Caravan cannot undo (its stock sold, the platform's"
            " payment booked); stop the goods if they have not left, "
            + ("then agree to the refund on the platform or refuse it there; " if refund else "")
            + "once the platform has refunded its buyer, void our payment of the order"
            f" (`caravan payments void-sold {ours} --reason ...`: the platform's collection"
            " reversed, the sellers owed nothing, the order staying confirmed), settle any"
            " goods sent back by hand (`caravan inventory adjust` puts them back in a lot);"
            " then resolve this"
        )
    else:
        what = (
            ": it is not confirmed here yet; "
            + ("to agree, " if refund else "")
            + (
                "cancel it for its buyer"
                f" (`caravan orders cancel {ours} --by buyer`, or `POST /orders/{ours}/cancel`)"
                if ours != NOT_NUMBERED
                else "cancel it for its buyer once the orders service has numbered it (`caravan"
                " orders cancel ID --by buyer`, or `POST /orders/{order_id}/cancel`: a push of it"
                " then names the id)"
            )
            + (", or refuse the refund on the platform" if refund else "")
            + "; then resolve this (if it was confirmed meanwhile, the cancel answers 409:"
            " settle the goods and the money by hand)"
        )
    return Problem("refund_requested" if refund else "cancelled_on_platform", said + what)


def as_placed(order: PlatformOrder) -> dict[str, object]:
    """What of ``order`` was placed with us, to tell a later change of it by
    (:func:`changes_since`): each platform SKU's quantity, and digests of the delivery and of
    the buyer (the address itself is not kept twice)."""
    items: dict[str, int] = {}
    for item in order.items:
        items[item.sku] = items.get(item.sku, 0) + item.quantity
    delivery = None if order.delivery is None else order.delivery.model_dump(mode="json")
    return {"items": items, "delivery": _digest(delivery), "buyer": _digest(order.buyer.id)}


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def changes_since(placed: Mapping[str, object], order: PlatformOrder) -> list[str]:
    """How ``order`` differs from what was placed (:func:`as_placed`), in words that name
    the platform's SKUs and quantities but never the buyer or the address; empty if not. A
    digest erased with its buyer (docs/personal-data.md, Erasing a buyer) is not compared."""
    now = as_placed(order)
    said = []
    before, after = placed.get("items"), now["items"]
    if before != after and isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for sku in sorted(before.keys() | after.keys()):
            was, now_is = before.get(sku), after.get(sku)
            if was is None:
                lines.append(f"{sku!r} {now_is} added")
            elif now_is is None:
                lines.append(f"{sku!r} {was} removed")
            elif was != now_is:
                lines.append(f"{sku!r} {was} -> {now_is}")
        said.append("items: " + ", ".join(lines))
    if "delivery" in placed and placed["delivery"] != now["delivery"]:
        said.append("the delivery address")
    if "buyer" in placed and placed["buyer"] != now["buyer"]:
        said.append("the buyer")
    return said


def changed_after_placed(order: PlatformOrder, ours: str, changes: list[str]) -> Problem:
    """Why a paid order the platform changed after we placed it (``ours``, our order id)
    needs operations: an order is placed once, so the change (``changes``,
    :func:`changes_since`) is not applied here."""
    return Problem(
        "changed_after_placed",
        f"the platform changed the order after it was placed as our order {ours}, and the"
        f" change was not applied ({'; '.join(changes)}): our order goes on as placed; if the"
        " change must be made, cancel our order if it is not confirmed yet and have the"
        " platform place a new one, or settle the difference by hand; then resolve this"[:1000],
    )


def paid_after_cancelled(order: PlatformOrder, cancelled: str) -> Problem:
    """Why an order read ``paid`` is not placed: a push before found it ``cancelled`` (a
    status meaning so) when it was not placed yet. Cancelled is final on the platform, so the
    paid read is an older answer decided later (a slow order API, a push held up)."""
    return Problem(
        "paid_after_cancelled",
        f"the platform says {order.status!r} of an order an earlier push found {cancelled!r}"
        " before it was placed with us: not placed, as a cancelled order stays cancelled (this"
        " read is older than that one). Should the platform have it paid all the same, resolve"
        " this, which forgets the cancellation, then refetch it (`caravan platform refetch APP"
        " PLATFORM_ORDER_ID`); else resolve it",
    )


def fulfilled_after_cancelled(order: PlatformOrder, ours: str) -> Problem:
    """Why an order we cancelled (``ours``, our order id; the platform was told) that the
    platform then says is being fulfilled (shipped, finished) needs operations: goods went out
    that Caravan holds no stock, loan or charge for, or the platform never took in our
    cancellation and the buyer waits for goods."""
    return Problem(
        "fulfilled_after_cancelled",
        f"the platform says {order.status!r} (a step of fulfilment) of an order we cancelled"
        f" (our order {ours}; the platform was told): Caravan holds no stock or payment for it;"
        " ask the seller whether goods left, and settle the sale or the refund on the platform"
        " by hand; then resolve this",
    )


def mapped_to_unknown_sku(app: str, ours: str, mapped: Mapping[str, str | None] | None) -> Problem:
    """Why a platform order we placed (``ours``, our order id) that the saga cancelled
    ``unknown_sku`` needs operations: inventory has no product of a SKU its platform SKUs are
    mapped to, as a mapping is not checked against the catalogue when it is made (only
    inventory knows it). ``mapped``: each of its platform SKUs and the SKU of ours it is
    mapped to now (None if no longer mapped); None for an order placed before 2026-12-05,
    whose platform SKUs were not kept. The platform is told ``cancelled`` (its buyer refunded
    there), as the order is; it cannot be placed again: the mapping is what to mend."""
    if mapped is None:
        named = "not kept for an order placed before 2026-12-05"
    else:
        named = ", ".join(
            f"{platform!r} -> {'no mapping' if sku is None else repr(sku)}"
            for platform, sku in sorted(mapped.items())
        )
    return Problem(
        "mapped_to_unknown_sku",
        f"our order {ours} was cancelled unknown_sku: a SKU its platform SKUs are mapped to is"
        " no product inventory has (a mapping PUT over HTTP is not checked against the"
        " catalogue: a typo?). The platform was told it is cancelled (its buyer is refunded"
        " there) and it cannot be placed again; mend the mapping (`caravan platform map-sku"
        f" {app} PLATFORM_SKU SKU` checks it; or `PUT /platform/{app}/mappings/sku/PLATFORM_SKU`)"
        f" so that the next orders are placed, then resolve this. Its platform SKUs, mapped now:"
        f" {named}"[:1000],
    )


def to_request(
    order: PlatformOrder,
    skus: Mapping[str, SkuMapping],
    buyers: Mapping[str, BuyerMapping],
) -> PlatformOrderRequested | list[Problem]:
    """Our request for a paid platform order (an ``order.requested`` in every field), or
    why there cannot be one.

    The platform order id is the ``order_ref``; platform SKUs mapped to the same SKU of ours
    are merged into one line; the platform has taken the money, so payment is ``prepaid``.
    The buyer's phone is the mapping's, else the platform's read as E.164
    (:func:`shared.phones.as_e164`).
    """
    problems = []
    unmapped = sorted({item.sku for item in order.items if item.sku not in skus})
    if unmapped:  # one problem of each kind for an order (operations' list), naming them all
        named = ", ".join(repr(sku) for sku in unmapped)
        says = "has" if len(unmapped) == 1 else "have"
        plural = "" if len(unmapped) == 1 else "s"
        problems.append(Problem("unmapped_sku", f"platform SKU{plural} {named} {says} no mapping"))
    buyer = buyers.get(order.buyer.id)
    if buyer is None:
        problems.append(Problem("unmapped_buyer", unmapped_buyer(order.buyer.id)))
    if problems or buyer is None:
        return problems
    quantities: dict[str, int] = {}
    for item in order.items:
        sku = skus[item.sku].sku
        quantities[sku] = quantities.get(sku, 0) + item.quantity
    phone = buyer.phone or as_e164(order.buyer.phone or "")
    try:
        return PlatformOrderRequested.model_validate(  # as one: a fault names its whole path
            {
                "order_ref": order.order_id,
                "buyer": {"id": buyer.buyer_id, "phone": phone or "", "locale": buyer.locale},
                "lines": [{"sku": sku, "quantity": q} for sku, q in quantities.items()],
                "payment": {"method": "prepaid"},
                "delivery": order.delivery,
            }
        )
    except ValidationError as exc:
        # Why the phone is refused, in place of the pattern; never the number (it is logged).
        gives = "none" if order.buyer.phone is None else f"one that is neither {PHONES_READ}"
        why = f"the platform gives {gives}, and the buyer's mapping has none"
        errors = faults(exc, {"buyer.phone": why})
        return [Problem("invalid_order", joined(errors)[:1000], errors[:ERRORS_SAID])]


PHONES_READ = "E.164 nor a mainland China mobile number written nationally"


ERRORS_SAID = 50
"""The most fields at fault an unreadable order's 422 names (its items are not bounded), and
an ``invalid_order`` push's answer."""


def faults(exc: ValidationError, said: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Each field at fault, ``{field, message}`` (:func:`shared.api.field_errors`); ``said``
    gives the why of some fields, in place of the validator's. A fault of the whole (not
    JSON, not an object) is the field ``""``."""
    return [
        {"field": e["field"], "message": (said or {}).get(e["field"], e["message"])}
        for e in field_errors(exc, whole="")
    ]


def joined(errors: list[dict[str, str]]) -> str:
    """Each field at fault and why, on one line; a fault of the whole is its why alone."""
    return "; ".join(
        f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors
    )


def describe(exc: ValidationError) -> str:
    """Each field of ``exc`` at fault and why, on one line (:func:`joined`)."""
    return joined(faults(exc))

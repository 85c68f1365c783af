"""Events of ``orders.requests.v1`` and ``orders.events.v1`` (public, see CONTRACT.md)."""

from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import (
    AwareDatetime,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.api import again, worded
from shared.events.envelope import EventData, Fen, Frozen, LoanId, NoNul, OrderId
from shared.topics import EventType, Topic

OrderRef = str
ORDER_REF_PATTERN = worded(
    r"^[A-Za-z0-9._:-]{1,64}$", "1-64 characters, each an ASCII letter or digit or one of . _ : -"
)
E164_PATTERN = worded(
    r"^\+[1-9][0-9]{6,14}$", "an E.164 phone number, + and 7 to 15 digits: e.g. +8613912345678"
)
Locale = Literal["zh-CN", "ug-CN", "en"]
PaymentMethod = Literal["microloan", "prepaid"]
HTTP_SOURCE = "http"
"""The ``source`` of the orders ``POST /orders`` places: never a storefront's on the topic."""
PLATFORM_SOURCE_PREFIX = "platform/"
"""The ``source`` of the orders a marketplace platform adapter places: ``platform/<app>``."""


def refused_source(source: str) -> str | None:
    """Why a storefront's ``order.requested`` on ``orders.requests.v1`` may not name
    ``source``, or None: Caravan alone places the orders of a platform (``platform/<app>``,
    by its adapter on ``platform.events.v1``) and of ``http`` (by ``POST /orders``), in any
    case: ``Platform/taobao`` or ``HTTP`` was placed, a platform's or the API's order to
    whoever reads a source as people do."""
    folded = source.casefold()
    if folded == HTTP_SOURCE:
        return "the orders of source http are placed by POST /orders only"
    if folded.startswith(PLATFORM_SOURCE_PREFIX):
        return "a marketplace platform's orders are placed by its adapter only"
    return None


def platform_app(source: str | None) -> str | None:
    """The platform app that placed an order of ``source``, or None (not a platform's)."""
    if source is None or not source.startswith(PLATFORM_SOURCE_PREFIX):
        return None
    return source.removeprefix(PLATFORM_SOURCE_PREFIX) or None


CancelReason = Literal[
    "unknown_sku",
    "out_of_stock",
    "out_of_season",
    "credit_declined",
    "payment_failed",
    "expired",
    "cancelled_by_buyer",
    "cancelled_by_operator",
]
"""Why an order was cancelled. ``cancelled_by_buyer``: its buyer asked (a storefront or a
platform for them, or operations at their word); ``cancelled_by_operator``: operations
cancelled it of their own accord (a reason code added in v1, since 2026-12-07: before, such a
cancellation said ``cancelled_by_buyer``)."""


class Buyer(Frozen):
    id: str = Field(min_length=1, max_length=64)
    phone: str = Field(pattern=E164_PATTERN)
    locale: Locale | None = Field(
        None,
        description=(
            "the language of the buyer's texts; left out, the one `caravan seed` gave the buyer"
            " (a seed file's buyers), else zh-CN"
        ),
    )


MAX_LINES = 50
MAX_QUANTITY = 10_000
MAX_TERM_MONTHS = 12


class OrderLine(Frozen):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=MAX_QUANTITY, strict=True)


class PaymentRequest(Frozen):
    method: PaymentMethod
    term_months: int | None = Field(None, ge=1, le=MAX_TERM_MONTHS, strict=True)

    @model_validator(mode="after")
    def _term_for_microloans(self) -> Self:
        if self.method == "microloan" and self.term_months is None:
            raise ValueError("term_months is required for microloan payments")
        return self

    def unused_fields(self) -> tuple[str, ...]:
        # A prepaid payment lends nothing: its term_months makes no loan and is texted to no one.
        unused = self.method == "prepaid" and self.term_months is not None
        return ("term_months",) if unused else ()


class Delivery(Frozen):
    county: str = Field(min_length=1, max_length=64)
    address: str = Field(min_length=1, max_length=256)


def _sku_of(line: object) -> object:
    return line.get("sku") if isinstance(line, dict) else getattr(line, "sku", None)


def _each_sku_once(lines: Any, handler: ValidatorFunctionWrapHandler) -> list[OrderLine]:
    """A sku on a line after another's is told on that line (``lines.1.sku``), with the lines'
    own errors and the request's other fields': said of the whole request (``body``,
    ``data``), it came only once every field was right, one round of edits more."""
    first: dict[object, int] = {}
    twice: list[InitErrorDetails] = []
    for i, line in enumerate(lines if isinstance(lines, list) else []):
        sku = _sku_of(line)
        if isinstance(sku, str) and first.setdefault(sku, i) != i:
            said = f"each sku may appear in at most one line: line {first[sku]} has it too"
            error = PydanticCustomError("sku_twice", said)
            twice.append({"type": error, "loc": (i, "sku"), "input": sku})
    try:
        valid: list[OrderLine] = handler(lines)
    except ValidationError as exc:
        if not twice:
            raise
        errors = sorted([*map(again, exc.errors()), *twice], key=lambda e: _line_of(e["loc"]))
        raise ValidationError.from_exception_data(exc.title, errors) from None
    if twice:
        raise ValidationError.from_exception_data("lines", twice)
    return valid


def _line_of(loc: tuple[int | str, ...]) -> int:
    return loc[0] if loc and isinstance(loc[0], int) else -1


class OrderRequested(EventData, NoNul):
    topic: ClassVar[Topic] = Topic.ORDER_REQUESTS
    event_type: ClassVar[EventType] = EventType.ORDER_REQUESTED

    order_ref: OrderRef = Field(pattern=ORDER_REF_PATTERN)
    buyer: Buyer
    lines: Annotated[list[OrderLine], WrapValidator(_each_sku_once)] = Field(
        min_length=1, max_length=MAX_LINES
    )
    payment: PaymentRequest
    delivery: Delivery | None = None

    def partition_key(self) -> str:
        return self.order_ref


class OrderPlaced(EventData):
    topic: ClassVar[Topic] = Topic.ORDER_EVENTS
    event_type: ClassVar[EventType] = EventType.ORDER_PLACED

    order_id: OrderId
    order_ref: OrderRef
    source: str
    buyer_id: str
    lines: list[OrderLine]
    buyer: Buyer | None = None
    payment: PaymentRequest | None = None
    placed_at: datetime | None = None
    delivery: Delivery | None = None  # where to send the goods, as the request said
    deadline_at: AwareDatetime | None = Field(
        None,
        description=(
            "when the order is cancelled `expired` if it is still pending (placed_at plus the"
            " saga deadline); none in events of before 2026-12-05"
        ),
    )


class ScheduledInstalment(Frozen):
    """One instalment of a loan's schedule: ``amount_fen`` includes ``interest_fen``."""

    number: int
    due: date
    amount_fen: Fen
    interest_fen: Fen = 0


class ConfirmedPayment(Frozen):
    method: PaymentMethod
    loan_id: LoanId | None = None
    # Microloans: the instalments the buyer repays (an optional field added in v1).
    schedule: list[ScheduledInstalment] | None = None


SOURCE_FIELD = Field(
    None,
    description=(
        "the source of the request that placed the order (as order.placed says): an order_ref"
        " is unique only per source, so match an outcome by order_id or by (source,"
        " order_ref); none in events of before 2026-12-04"
    ),
)
"""``source`` of a terminal event (an optional field added in v1)."""


class OrderConfirmed(EventData):
    topic: ClassVar[Topic] = Topic.ORDER_EVENTS
    event_type: ClassVar[EventType] = EventType.ORDER_CONFIRMED

    order_id: OrderId
    order_ref: OrderRef
    total_fen: Fen
    payment: ConfirmedPayment
    term_months: int | None = None
    source: str | None = SOURCE_FIELD


ReasonCode = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description=f"one of {', '.join(get_args(CancelReason))}; codes may be added",
    ),
]
"""A reason an order was cancelled, as readers take it: one of :data:`CancelReason` today,
any code later (CONTRACT.md: a new reason code is a compatible change). With the list
itself, an order.cancelled of a newer orders service was dead-lettered by the other
services: its stock stayed held, its loan unvoided."""


class OrderCancelled(EventData):
    topic: ClassVar[Topic] = Topic.ORDER_EVENTS
    event_type: ClassVar[EventType] = EventType.ORDER_CANCELLED

    order_id: OrderId
    order_ref: OrderRef
    reason: ReasonCode
    source: str | None = SOURCE_FIELD
    skus: list[str] | None = Field(
        None,
        description=(
            "the SKUs of the order's lines the reason is of, when it is a product's"
            " (unknown_sku, out_of_stock, out_of_season), as inventory named them: a line"
            " failing for another of these at once is not named, inventory telling the first"
            " of unknown_sku, out_of_season, out_of_stock any line has; none for another"
            " reason, and in events of before 2026-12-06"
        ),
    )
    """The products the order was cancelled for (an optional field added in v1)."""


class FieldError(Frozen):
    field: str
    message: str


class OrderRejected(EventData):
    topic: ClassVar[Topic] = Topic.ORDER_EVENTS
    event_type: ClassVar[EventType] = EventType.ORDER_REJECTED

    order_ref: str
    source: str
    errors: list[FieldError]
    order_id: OrderId | None = Field(
        None,
        description=(
            "set only when the request reused the (source, order_ref) of this order with other"
            " content: that order stands, and this rejection answers the request, not it"
        ),
    )

    def partition_key(self) -> str:
        return self.order_ref

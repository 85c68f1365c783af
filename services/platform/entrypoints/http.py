"""The platform adapter's HTTP API.

Pushes (authenticated by the app's signature, not by a token):

- ``POST /platform/{app}/push``: a form (``application/x-www-form-urlencoded``) or JSON object of
  string (or number) parameters, signed as :mod:`services.platform.domain.signing` says, with
  ``timestamp`` (Unix seconds or milliseconds, ISO 8601 with a zone, or Taobao's ``yyyy-MM-dd
  HH:mm:ss`` in Beijing time) within the window, ``order_id`` (the platform's), and ``push_id`` or
  ``nonce`` (else the signature identifies the push). Whatever else a push carries (a full order, or
  only "order changed") is not trusted: the order is fetched from the platform's order API. Answers:
  200 ``{"status": "accepted" | "duplicate" | "problem" | "ignored", "order_ref"}``, a
  ``problem`` naming the kinds found in ``problems``, and an ``invalid_order``'s fields at fault
  in ``errors`` (:class:`PushAnswer`) (the same push sent
  again, under a push id taken, but perhaps signed anew with another ``timestamp``, is answered
  as it was first, ``duplicate`` once ``accepted``, not acted on again; a push of a ``sign``
  taken, its parameters cut elsewhere, is a ``duplicate``; a status the adapter does not know,
  such as ``shipped``, is ``ignored`` for an
  order placed already when it is a step of fulfilment, else an ``unknown_status`` ``problem``, as
  for one never placed; a paid order placed already that the platform changed since, whose change is
  not applied, a ``changed_after_placed`` ``problem``); 401 bad signature, unknown app or stale
  timestamp (nothing stored or published); 409 another push under a push id taken; 422 a body that
  is not flat parameters, a ``timestamp`` missing or in no format read, or an ``order_id`` that
  cannot be an ``order_ref``, or an order the order API answers that we cannot read (a field we
  cannot take: an ``invalid_order`` problem for operations too); 404 an order the platform does not
  know; 502 the order API answered another order, or refused our signature (401, 403: the app's
  secret or a clock to mend, then push again); 503 the order API failed (push again later).

Operations (bearer token: ``platform:write`` to change mappings, which the audit trail
records; ``platform:read`` or ``platform:write`` to read; a token bound to ``platform/APP``,
a platform's own, reads that app's problems and callbacks alone: :func:`apps_read`):

- ``PUT /platform/{app}/mappings/sku/{platform_sku}`` ``{"sku"}`` (not checked against the
  catalogue, which only inventory knows: an order placed through a SKU inventory does not
  have is cancelled ``unknown_sku``, a ``mapped_to_unknown_sku`` problem);
  ``PUT /platform/{app}/mappings/buyer/{platform_buyer}`` ``{"buyer_id", "phone", "locale"}``;
  ``GET`` / ``DELETE`` the same paths; ``GET /platform/{app}/mappings``: the app's mappings.
- ``GET /platform/problems?app=&all=``: pushed orders that could not be placed (open only,
  unless ``all``), e.g. an unmapped SKU, or that the platform cancelled (or whose buyer asked
  it for a refund) after we placed them, or that we cancelled ``unknown_sku`` (a mapping to
  mend), the newest (first seen) first;
  ``POST /platform/problems/resolve`` ``{"app", "platform_order_id"}`` (``platform:write``,
  audited): an order's problems settled by hand (an app unknown refused 422, as by the
  list; an order the adapter has never seen, 404); ``POST /platform/refetch`` the same body
  (``platform:write``, audited): the order fetched and decided on as a push is (a problem
  mended), answered as a push, its 502 and 503 saying to refetch again, not to push.
- ``GET /platform/callbacks?app=&status=&order_id=&platform_order_id=``: status callbacks
  and their attempts, the newest first (``order_id`` is ours, a UUID: another is refused
  422, ``platform_order_id`` the platform's); ``POST /platform/callbacks/retry`` ``{"app",
  "event_ids"}`` (one or both: an app configured or with callbacks, event ids that are
  UUIDs; ``platform:write``, audited): the ``failed`` ones sent again at once from a first
  attempt, the ``pending`` ones at once, their attempts kept (the answer and the audit row:
  how many, of them how many failed and pending, and the first ``LISTED`` event ids).

The three listings are paged (:mod:`shared.pagination`): ``?cursor=&limit=`` (1-100, 100 by
default), the list beside ``next_cursor``, null on the last page. Problems and callbacks of an
``app`` neither configured nor with one listed are refused 422, as a retry of it is, and so is
each mapping route of such an app (a mapping of an app mistyped made every order of the real
app an unmapped problem).
"""

import asyncio
import collections
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from prometheus_client import Counter
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator
from sqlalchemy import Select, Table, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.platform import handlers
from services.platform.adapters.platform_api import (
    PlatformApi,
    PlatformRefused,
    PlatformUnavailable,
    SignatureRefused,
    UnreadableOrder,
)
from services.platform.adapters.tables import callbacks, mappings, problems
from services.platform.domain.orders import (
    BuyerMapping,
    PlatformOrder,
    Problem,
    ProblemKind,
    SkuMapping,
)
from services.platform.domain.retries import Backoff, CallbackStatus
from services.platform.domain.signing import (
    SIGN,
    TIMESTAMP_FORMATS,
    fingerprint,
    parse_timestamp,
    unread_timestamp,
    unreadable_sign,
    verify,
    within,
)
from services.platform.metrics import PUSHES, REFETCHES, RESENT, UNKNOWN_APP, PushRefused
from shared.api import PATTERN_WORDS
from shared.auth import audit
from shared.auth.tokens import Principal
from shared.events.orders import ORDER_REF_PATTERN
from shared.http import (
    BAD_INPUT,
    LINE_BREAK,
    NO_NUL,
    elsewhere,
    invalid,
    not_utf8,
    problem,
    problem_responses,
    refused_403,
    refused_body,
    require,
    send_json,
    unavailable,
)
from shared.ids import as_stored
from shared.logs import Burst
from shared.messaging.uow import Tx, UnitOfWork
from shared.pagination import Limit, Position, after, cursor_after, newest_first, page

log = logging.getLogger(__name__)

ORDER_REF = re.compile(ORDER_REF_PATTERN)
DOT_SEGMENTS = (".", "..")
"""Order ids an order_ref may be but the order API's URL cannot hold: ``{api_url}/orders/..``
is resolved by HTTP clients as a path (httpx's: ``..`` fetched ``GET /?app_key=...``, ``.``
``GET /orders?...``), not as the order's; sent as ``%2E%2E``, by servers that normalise a
path as RFC 3986 allows (:func:`fetchable`)."""


def fetchable(order_id: str) -> str | None:
    """Why the order API cannot be asked for ``order_id`` (a dot segment), or None."""
    if order_id not in DOT_SEGMENTS:
        return None
    return (
        f"{order_id!r} names no order the order API can be asked for: in"
        f" {{api_url}}/orders/{order_id} it is a path's dot segment, which HTTP resolves away"
    )


MappingKind = Literal["sku", "buyer"]
MAPPING_MODELS: dict[str, type[SkuMapping] | type[BuyerMapping]] = {
    "sku": SkuMapping,
    "buyer": BuyerMapping,
}


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a push may carry")


NOT_UTF8_FORM = "(GBK, maybe?): percent-encode UTF-8, the text signed"
"""What a 422 says of a form whose percent-encoded bytes are not UTF-8 (:func:`parse_params`):
they were read as replaced text, and the push refused 401 as if its signature were wrong."""


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_params(body: bytes, content_type: str | None) -> dict[str, str]:
    """A push's parameters, from a flat JSON object (a ``Content-Type`` naming json) or a form
    (any other, or none); ValueError otherwise, which never quotes the body (it holds the
    ``sign``). A JSON body sent as another type, or none, is told to send its type. A JSON
    number is taken as written (``12.50``, ``1E3``): the platform signed that text, and
    ``str(float)`` would sign another (``12.5``, ``1000.0``). Either is UTF-8 (a form's
    values once percent-decoded): a UnicodeDecodeError, or a ValueError saying so."""
    if "json" in (content_type or "").lower():
        # Decoded here, not by json.loads, which reads bytes as UTF-16 or UTF-32 where it
        # guesses so (a BOM, NULs): "Expecting value" of a body that is not UTF-8.
        text = body.decode("utf-8-sig")
        try:
            data = json.loads(
                text or "null", parse_float=str, parse_int=str, parse_constant=_no_constant
            )
        except RecursionError:  # nested hundreds deep: not flat parameters, whatever it is
            raise ValueError("a JSON push must be a flat object") from None
        except json.JSONDecodeError as exc:  # its words quote none of the body
            raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
        if not isinstance(data, dict):
            raise ValueError("a JSON push must be an object")
        params: dict[str, str] = {}
        for key, value in data.items():
            if not isinstance(value, str):  # numbers are their text by now
                raise ValueError(f"parameter {key!r} must be a string or a number")
            params[key] = value
    elif body.lstrip()[:1] in (b"{", b"["):  # no form's first name starts so
        raise ValueError(send_json(content_type))
    else:
        text = body.decode()
        try:  # bytes percent-encoded that are no UTF-8 kept apart (surrogates), not replaced
            pairs = parse_qsl(
                text, keep_blank_values=True, strict_parsing=bool(text), errors="surrogateescape"
            )
        except ValueError:  # parse_qsl's says "bad query field: '...'", quoting the body
            raise ValueError("not a form: name=value pairs joined by &") from None
        for name, value in pairs:
            if not _utf8(name + value):
                named = f"parameter {name!r}" if _utf8(name) else "a parameter's name"
                raise ValueError(f"not UTF-8: {named} once percent-decoded {NOT_UTF8_FORM}")
        if twice := [name for name, n in collections.Counter(k for k, _ in pairs).items() if n > 1]:
            named = ", ".join(repr(name[:64]) for name in twice[:5])  # its names, never a value
            raise ValueError(f"a parameter appears more than once: {named}")
        params = dict(pairs)
    try:  # JSON's "\ud800" makes a str that has no UTF-8, so cannot be signed
        "".join(f"{key}{value}" for key, value in params.items()).encode()
    except UnicodeEncodeError:
        raise ValueError("a parameter is not Unicode text (a lone surrogate)") from None
    return params


REPLAYED = "another push (other parameters) of this push_id or nonce was taken already"
_PARAMS = {
    "type": "object",
    "description": "flat parameters, signed: sign over all the others (the route's"
    " description says how)",
    "required": [SIGN, "timestamp", "order_id"],
    "properties": {
        SIGN: {"type": "string"},
        "timestamp": {
            "type": ["string", "number"],
            "description": TIMESTAMP_FORMATS,
        },
        "order_id": {
            "type": "string",
            "pattern": ORDER_REF_PATTERN,
            "not": {"enum": list(DOT_SEGMENTS)},
        },
        "push_id": {"type": "string", "maxLength": 128},
        "nonce": {"type": "string", "maxLength": 128},
    },
}
PUSH_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {**_PARAMS, "additionalProperties": {"type": "string"}}
        },
        "application/json": {
            "schema": {**_PARAMS, "additionalProperties": {"type": ["string", "number"]}}
        },
    },
}
"""The body of a push, which :func:`parse_params` reads itself (a form or JSON)."""
FETCH_PROBLEMS = {
    404: "the platform does not know the order",
    502: "the platform answered another order, or its order API refused our signed request"
    " (401, 403: the app's secret or a clock to mend)",
    503: "the platform's order API failed, or the database is not reachable, takes no more"
    " connections or did not answer in time (see Retry-After): ask again later, a push under"
    " the same push id (a 503 of the database may have placed the order: then duplicate)",
}
"""What a push and a refetch answer when the order is not fetched (:func:`fetch_and_decide`)."""
UNREADABLE = "an order the platform answers that cannot be read"
# No route of the adapter declares the 409 of a race lost at commit (problem_responses'
# ``writes``): it queues no row for its commit but outbox rows (a serial key), writing the
# rest itself, each insert settling a conflict (ON CONFLICT), the audit entry directly.
PUSH_PROBLEMS = problem_responses(
    {
        **FETCH_PROBLEMS,
        503: f"{FETCH_PROBLEMS[503]}; or too many pushes at once, this one not taken in time"
        " (nothing done: push again later)",
        401: "a bad signature, an unknown app, or a timestamp out of the window",
        409: REPLAYED,
        422: "not flat parameters, a timestamp missing or in no format read, an order_id that"
        f" cannot be an order_ref, or {UNREADABLE}",
    },
    token=False,
)
REFETCH_PROBLEMS = problem_responses(
    {**FETCH_PROBLEMS, 422: f"{BAD_INPUT}, an app not configured, or {UNREADABLE}"}
)
"""A refetch's: those of its token, not a push's signature (401) nor push id (409)."""


class PushAnswer(BaseModel):
    """A push's 200, and a refetch's: what the adapter made of the order. A ``problem`` names
    the kinds of the problems found (those ``GET /platform/problems`` lists), and of an
    ``invalid_order`` each field at fault, as a 422's ``errors`` do, never their details or
    values, which may name our order or the buyer's phone: the platform learns what to mend
    (a SKU to map, a phone to send), operations the rest."""

    status: handlers.Decided
    order_ref: str
    problems: list[ProblemKind] | None = Field(
        None, description="a problem's kinds, as operations list them (only with problem)"
    )
    errors: list[dict[str, str]] | None = Field(
        None,
        description="of an invalid_order problem, each field of the order at fault,"
        " {field, message}, as a 422's errors (the first 50)",
    )


def answer_of(decision: handlers.Decision, order_ref: str) -> PushAnswer:
    """The 200 of a push or a refetch that ``decision`` (not ``replayed``) is."""
    assert decision.outcome != "replayed", decision
    return PushAnswer(
        status=decision.outcome,
        order_ref=order_ref,
        problems=list(decision.problems) or None,
        errors=list(decision.errors) or None,
    )


ANSWERED: dict[str, Any] = {"response_model": PushAnswer, "response_model_exclude_none": True}
"""A push's and a refetch's 200 (:class:`PushAnswer`), ``problems`` left out but of a
``problem``."""


@dataclass(frozen=True)
class Again:
    """What a push's or a refetch's caller is told to do when the order was not fetched:
    once the order API refused our signature (502), and while it fails (503)."""

    refused: str
    unavailable: str


PUSH_AGAIN = Again("then push again", "push again later")
REFETCH_AGAIN = Again(
    "then refetch it", "refetch it later, once the platform's order API answers (is it up?)"
)
"""A refetch is the operator's, not the platform's: the platform cannot push it again."""


class Gate:
    """At most ``size`` pushes taken at once (their push id looked at, the order fetched and
    decided on), the others waiting their turn, in order, up to ``seconds`` (0: as long as it
    takes), else answered 503 (:meth:`entered` yields False).

    A burst of pushes at once (a marketplace's sale: 500) was taken all at once: each took a
    pooled connection for its push id, fetched the order, then queued again for one to
    decide, behind every push not yet looked at, and past the request's bound on the database
    (8 s) all but a few were answered 503, the work done for them thrown away (a drill of
    2026-12-07: 498 of 500). Taken ``size`` at a time (the pool's capacity), a push once
    taken waits for little, and the fetches in flight at the platform's order API are as
    few; its wait for its turn is not the database's, so the request's bound waits meanwhile
    (:func:`~shared.http.elsewhere`) and bounds its work once it is taken."""

    SMOOTHING = 0.2
    """The weight of the last push's time in :attr:`held` (a moving average)."""
    RETRY_BOUNDS = (1, 60)

    def __init__(self, size: int, seconds: float) -> None:
        self.size = size
        self.seconds = seconds
        self._free = asyncio.Semaphore(size)
        self.waiting = 0
        self.held: float | None = None  # the seconds a push holds the gate, of late

    def retry_after(self) -> int:
        """When the queue ahead is likely gone: the pushes waiting now, taken :attr:`size` at a
        time, each batch holding the gate the recent moving average of a push's time in it
        (:attr:`held`; before any has left, the wait's bound). So ``waiting / size * held``
        seconds, rounded up, within :data:`RETRY_BOUNDS` (1 s .. 60 s). It was a flat 5 s,
        the same for a push behind 10 and one behind 480."""
        held = self.seconds if self.held is None else self.held
        low, high = self.RETRY_BOUNDS
        return min(high, max(low, math.ceil(self.waiting / self.size * held)))

    @contextlib.asynccontextmanager
    async def entered(self) -> AsyncIterator[bool]:
        self.waiting += 1
        try:
            with elsewhere():
                async with asyncio.timeout(self.seconds or None):
                    await self._free.acquire()
            taken = True
        except TimeoutError:
            taken = False
        finally:
            self.waiting -= 1
        if not taken:
            yield False
            return
        began = time.monotonic()
        try:
            yield True
        finally:
            self._free.release()
            took = time.monotonic() - began
            last = took if self.held is None else self.held
            self.held = last + self.SMOOTHING * (took - last)


BUSY = (
    "{waiting} pushes wait for their turn ({size} taken at a time), this one longer than"
    " {seconds:g} s: push again later, under the same push id"
)
"""A push's 503 when it waited longer than its :class:`Gate` allows."""
TURNED_AWAY = Burst(log)
"""The busy 503s' warnings: the first of a burst, then one line for the rest."""


def turned_away(app: str, order_id: str, waiting: int, size: int) -> None:
    """A push of ``app`` turned away busy (``waiting`` ahead of it), told as :class:`Burst`
    tells: a sale's 290 turned away are two lines, not 290."""

    def summary(count: int, most: int) -> str:
        return (
            f"push for app {app!r}: 503 to {count} more pushes, not taken in time within"
            f" {TURNED_AWAY.window:g} s (up to {most} waited, {size} taken at a time)"
        )

    first = f"push for app {app!r} of order {order_id}: 503, not taken in time"
    TURNED_AWAY.met(app, first, summary, most=waiting)


def push_router(
    uow: UnitOfWork, api: PlatformApi, window_seconds: float, retry: Backoff, gate: Gate
) -> APIRouter:
    """The push route; ``retry``: the waits a push is answered to take while the order API
    fails (:meth:`~services.platform.domain.retries.Backoff.retry_after`); ``gate``: how many
    pushes are taken at once, the others waiting their turn."""
    router = APIRouter(tags=["platform pushes"])

    def refuse(
        app: str, outcome: PushRefused, status: int, title: str, detail: str, request: Request
    ) -> Response:
        client = request.client.host if request.client else "?"
        log.warning("push for app %r from %s refused: %s", app, client, outcome)
        PUSHES.labels(app if app in api.apps else UNKNOWN_APP, outcome).inc()
        return problem(status, title, detail)

    @router.post(
        "/platform/{app}/push",
        openapi_extra={"requestBody": PUSH_BODY},
        responses=PUSH_PROBLEMS,
        **ANSWERED,
    )
    async def push(app: str, request: Request) -> Any:
        """Take a platform's order push ("look at this order"): flat parameters, a form or a
        JSON object of strings or numbers, in UTF-8. ``sign``: over every other parameter
        sorted by name, each written as its name then its value with nothing between (the
        string signed, UTF-8), the upper- or lower-case hex of HMAC-SHA256 keyed with the app's
        secret (or, an app of ``md5``, MD5 of secret + string + secret). ``timestamp``: when
        it was signed, within the window of Caravan's clock either way; ``order_id``: the
        platform's (the order's ``order_ref``); ``push_id`` or ``nonce``: this push's, taken
        once per app. Whatever else it carries, the order is fetched from the platform's order
        API, and decided on. The whole of it, with a worked example of a signature and every
        answer: Caravan's docs/platform.md, "Pushing an order"."""
        try:
            params = parse_params(await request.body(), request.headers.get("content-type"))
        except ValueError as exc:  # a UnicodeDecodeError among them
            PUSHES.labels(app if app in api.apps else UNKNOWN_APP, "invalid").inc()
            said = not_utf8(exc) if isinstance(exc, UnicodeDecodeError) else str(exc)[:500]
            return refused_body(said, "Not a platform push")
        config = api.apps.get(app)
        unreadable = unreadable_sign(params.get(SIGN))
        if (
            config is None
            or unreadable
            or not verify(params, config.secret.get_secret_value(), config.sign_method)
        ):
            refused: PushRefused = "unknown_app" if config is None else "bad_signature"
            # One answer for an unknown app and a wrong secret: which apps exist is not said.
            # So the detail names both things to check: the app's name and its secret. A
            # sign that no secret could have made (none, base64) is said so, for any app.
            detail = unreadable or f"no app {app!r} with a secret that signs this push"
            return refuse(app, refused, 401, "Bad signature", detail[:300], request)
        signature = params[SIGN].upper()
        push_id = params.get("push_id") or params.get("nonce") or signature
        order_id = params.get("order_id", "")
        at = parse_timestamp(params.get("timestamp", ""))
        # Every parameter at fault, each named (one round trip mends them all). The
        # platform's order id is our order_ref: one that cannot be is refused here.
        faults: dict[str, str] = {}
        if not ORDER_REF.fullmatch(order_id):
            words = PATTERN_WORDS[ORDER_REF_PATTERN]
            faults["order_id"] = f"order_id needed: {words} (it is the order_ref)"
        elif unfetchable := fetchable(order_id):
            faults["order_id"] = f"order_id {unfetchable}"
        if at is None:
            faults["timestamp"] = unread_timestamp(params.get("timestamp", ""))
        if len(push_id) > 128:
            named = "push_id" if params.get("push_id") else "nonce"
            faults[named] = f"{named} of at most 128 characters needed"
        if faults or at is None:
            PUSHES.labels(app, "invalid").inc()
            errors = [{"field": field, "message": said} for field, said in faults.items()]
            return problem(422, "Not a platform push", "; ".join(faults.values()), errors=errors)
        now = datetime.now(UTC)
        if not within(at, now, window_seconds):
            # A timestamp ahead is no stale one: a clock of the platform's ahead, or ours behind.
            ahead = at > now
            off = abs((now - at).total_seconds())
            detail = (
                f"timestamp {params['timestamp']!r}, read as {at.isoformat()}, is {off:.0f} s"
                f" {'after' if ahead else 'before'} Caravan's time"
                f" ({now.isoformat(timespec='seconds')}), out of the window of"
                f" {window_seconds:.0f} s either way"
            )
            title = "Timestamp in the future" if ahead else "Stale timestamp"
            return refuse(app, "stale", 401, title, detail[:500], request)
        same = fingerprint(params)
        waiting = gate.waiting
        async with gate.entered() as taken:
            if not taken:
                turned_away(app, order_id, waiting, gate.size)
                PUSHES.labels(app, "busy").inc()
                said = BUSY.format(waiting=waiting, size=gate.size, seconds=gate.seconds)
                return unavailable("Too many pushes at once", said, gate.retry_after())
            async with uow.begin() as tx:
                before = await handlers.seen(tx, app, push_id, same, signature)
            if before is not None and before.outcome == "replayed":
                return refuse(app, "replayed", 409, "Push already received", REPLAYED, request)
            if before is not None:  # sent again, our answer lost: answered again, not acted on
                PUSHES.labels(app, RESENT).inc()
                return answer_of(before, order_id)

            async def accepted(tx: Tx, order: PlatformOrder) -> handlers.Decision:
                return await handlers.accept_push(tx, app, push_id, same, signature, order)

            return await fetch_and_decide(app, order_id, accepted, PUSHES, PUSH_AGAIN, request)

    # The push URL written with a trailing slash is the same push: it was a bare 307 to the
    # URL without it, which a platform's client need not follow for a POST (the signature
    # covers the parameters, not the path). Left out of the OpenAPI document: one path is
    # documented.
    router.add_api_route(
        "/platform/{app}/push/", push, methods=["POST"], include_in_schema=False, **ANSWERED
    )

    @router.post(
        "/platform/refetch",
        tags=["platform operations"],
        responses=REFETCH_PROBLEMS,
        **ANSWERED,
    )
    async def refetch(body: Refetch, who: Writer, request: Request) -> Any:
        """Fetch an order from the platform's order API and decide on it as on a push
        (``POST /platform/{app}/push``), for operations (audited): a push answered
        ``problem`` keeps its push id, so the same push sent again after the cause is mended
        (a mapping added) is answered that ``problem`` again, not decided anew, and platforms
        push only when an order changes."""
        if body.app not in api.apps:
            why = f"no app {body.app!r} in CARAVAN_PLATFORM_APPS ({the_apps(api.apps)})"
            return problem(422, "Unknown app", why)

        async def decided(tx: Tx, order: PlatformOrder) -> handlers.Decision:
            decision = await handlers.decide(tx, body.app, order)
            told: dict[str, Any] = {"status": decision.outcome, "platform_status": order.status}
            if decision.problems:  # the kinds its answer names (PushAnswer)
                told["problems"] = list(decision.problems)
            target = f"{body.app}/{order.order_id}"
            await audit.record(tx.conn, who.name, "platform.refetch", target, detail=told)
            return decision

        platform_order_id = body.platform_order_id
        return await fetch_and_decide(
            body.app, platform_order_id, decided, REFETCHES, REFETCH_AGAIN, request
        )

    async def fetch_and_decide(
        app: str,
        order_id: str,
        decide: Callable[[Tx, PlatformOrder], Awaitable[handlers.Decision]],
        counted: Counter,
        again: Again,
        request: Request,
    ) -> Any:
        """Fetch the order, then ``decide`` on it in one transaction; the answer of a push.
        ``counted``: by app and outcome (:data:`PUSHES`, or :data:`REFETCHES`); ``again``:
        what the caller is told to do when the order was not fetched."""
        try:
            # The order API's time is not the database's: its own deadline bounds it
            # (CARAVAN_PLATFORM_API_DEADLINE_SECONDS, 10 s), past the request's bound on
            # PostgreSQL (CARAVAN_HTTP_DB_TIMEOUT_SECONDS, 8 s), which cut a slow fetch to a 500.
            with elsewhere():
                order = await api.fetch_order(app, order_id)
        except (PlatformUnavailable, SignatureRefused) as exc:
            cause = f" ({exc.__cause__!r})" if exc.__cause__ is not None else ""
            log.warning("platform %s order %s not fetched: %s%s", app, order_id, exc, cause)
            if isinstance(exc, SignatureRefused):  # a secret or a clock to mend, by hand
                counted.labels(app, "fetch_signature_refused").inc()
                title = "Platform order API refused Caravan's request"
                return problem(502, title, f"{exc}; {again.refused}")
            counted.labels(app, "fetch_failed").inc()
            wait = retry.retry_after(exc.failing_for)
            detail = f"{exc}: {again.unavailable}"
            return unavailable("Platform order API unavailable", detail, wait)
        except PlatformRefused as exc:
            counted.labels(app, "fetch_refused").inc()
            return problem(404, "Order not available from the platform", str(exc)[:500])
        except UnreadableOrder as exc:
            counted.labels(app, "fetch_refused").inc()
            async with uow.begin() as tx:  # for operations to see, until a push mends it
                await handlers.lock_platform_order(tx, app, order_id)
                found = [Problem("invalid_order", str(exc)[:1000])]
                await handlers.record_problems(tx, app, order_id, found)
            title = "Order not readable from the platform"
            return problem(422, title, str(exc)[:500], errors=exc.errors)
        if order.order_id != order_id:
            counted.labels(app, "fetch_refused").inc()
            detail = f"asked for order {order_id}, the platform answered {order.order_id}"
            return problem(502, "The platform answered another order", detail[:300])
        async with uow.begin() as tx:
            decision = await decide(tx, order)
        if decision.outcome == "replayed":
            return refuse(app, "replayed", 409, "Push already received", REPLAYED, request)
        counted.labels(app, decision.outcome).inc()
        return answer_of(decision, order.order_id)

    return router


Writer = Annotated[Principal, require("platform:write")]
Reader = Annotated[Principal, require("platform:read", "platform:write")]
"""A token reading: an operator's, unbound, reads every app's; one bound to ``platform/APP``
(a platform's own, ``platform:read`` alone: ``platform:write`` cannot be bound) reads that
app's problems and callbacks, no other's, and no mapping (:func:`apps_read`)."""


def apps_read(request: Request, who: Principal, app: str | None, what: str) -> list[str] | None:
    """The apps whose ``what`` (problems, callbacks) ``who`` is answered: None for an unbound
    token (every app's, or ``app``'s); for one bound to apps (:attr:`Principal.apps`), those,
    or ``app`` if it is one of them. Another app a bound token names is refused 403 naming
    its own, as ``GET /orders`` of another source is: asked before the app is looked up, so
    it says nothing of whether that app exists (an ``Unknown app`` 422 names the apps the
    centre serves, which a platform's token is not told)."""
    apps = who.apps
    if apps is None:
        return None
    if app is None:
        return sorted(apps)
    if app in apps:
        return [app]
    said = ", ".join(sorted(apps))
    raise refused_403(
        request,
        who,
        f"the token {who.name!r} reads the {what} of its own app alone (`app`: {said}), bound"
        " to it",
    )


def no_mapping_read(request: Request, who: Principal) -> None:
    """A 403 for a token bound to apps reading mappings: an app's mappings are the centre's
    (our SKUs, our buyers and their phones), read with an operator's token, unbound."""
    if who.apps is not None:
        raise refused_403(
            request,
            who,
            f"the token {who.name!r} is bound to its app's orders: mappings are read with an"
            " operator's token (unbound), not a platform's",
        )


OTHER_APP = "or it is bound to its app (a platform's) and `app` names another"
MAPPINGS_BOUND = "or it is bound to its app (a platform's): mappings are the centre's"
WITHHELD = frozenset({"detail"})
"""What of a problem a token bound to its app is not shown: its detail, operations' words
(our order id, what to do by hand), as a push's answer says the kinds alone."""
WITHHELD_CALLBACK = frozenset({"trace_headers"})
"""What of a callback a token bound to its app is not shown: the trace context of our event,
our tracing's own, which the callback sent it does not carry either."""
MAPPING_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"anyOf": [m.model_json_schema() for m in MAPPING_MODELS.values()]}
        }
    },
}
"""The body of ``PUT`` a mapping, which :func:`put_mapping` reads itself: the model of its
kind."""
HOLDS_NUL = "the app or the id holds NUL (no mapping can)"
AppName = Annotated[str, NO_NUL]  # lengths checked where they are stored (put_mapping)
ExternalId = Annotated[str, NO_NUL]
# Where a page starts: after a mapping's (kind, external_id), a problem's or a callback's key
# in the order they are listed, newest first (the order of an index of each).
Key = tuple[Any, ...]
PROBLEMS_ORDER: Key = (
    problems.c.first_seen_at,
    problems.c.app,
    problems.c.platform_order_id,
    problems.c.kind,
)
CALLBACKS_ORDER: Key = (callbacks.c.created_at, callbacks.c.event_id)
MAPPINGS_CURSOR = cursor_after(str, str)
PROBLEMS_CURSOR = cursor_after(datetime, str, str, str)
CALLBACKS_CURSOR = cursor_after(datetime, str)
LISTED = 100  # event ids a retry's answer and audit row name (the first, in order)
RETRIED: dict[CallbackStatus, dict[str, Any]] = {
    "pending": {"next_attempt_at": func.now()},
    "failed": {"status": "pending", "attempts": 0, "next_attempt_at": func.now()},
}
"""The callbacks a retry sends again at once, and how: one waiting out a backoff is due now,
its attempts kept (hurried, not given more: an operator's retry during an outage would
otherwise keep it from ever failing, and its attempts would no longer say how many there
were); one given up is pending again from a first attempt, a new budget (its own spent, an
operator sends it again once the platform is mended). The pending first: the failed, made
pending, are not hurried again."""


def the_apps(apps: Collection[str]) -> str:
    """The apps configured, by name, as an ``Unknown app`` 422 ends (``the apps are: farm-mall,
    t-market``), for the name mistyped to be put right: only names (never a secret or URL),
    and only to a caller with a token (an unknown app's push is told no more than a wrong
    secret's)."""
    return f"the apps are: {', '.join(sorted(apps))}" if apps else "no app is configured"


def admin_router(uow: UnitOfWork, apps: Collection[str]) -> APIRouter:
    """The operations routes; ``apps``: those configured (``CARAVAN_PLATFORM_APPS``)."""
    router = APIRouter(
        prefix="/platform",
        tags=["platform operations"],
        responses=problem_responses({422: BAD_INPUT}),
    )

    def _of_known_app(
        rows: str, not_found: str | None = None, bad: str = BAD_INPUT, bound: str | None = None
    ) -> dict[int | str, dict[str, Any]]:
        """The answers of a route refusing an app unknown (:func:`_unknown_app`): ``bad``
        input, a 404 ``not_found`` if it answers one, and the 403 of a token bound to its
        app if it reads: what of it is ``bound`` (:func:`apps_read`, :func:`no_mapping_read`)."""
        described = {422: f"{bad}, or an app unknown (not configured, no {rows} of it)"}
        if bound is not None:
            described[403] = f"the token lacks the scope platform:read or platform:write; {bound}"
        return problem_responses(described | ({404: not_found} if not_found else {}))

    @router.put(
        "/{app}/mappings/{kind}/{external_id:path}",
        openapi_extra={"requestBody": MAPPING_BODY},
        responses=_of_known_app("mapping", LINE_BREAK, f"{BAD_INPUT}, the app or the id too long"),
    )
    async def put_mapping(
        app: AppName, kind: MappingKind, external_id: ExternalId, request: Request, who: Writer
    ) -> Any:
        """Map a platform SKU (``{"sku"}``) or buyer (``{"buyer_id", "phone", "locale"}``)."""
        try:
            value = MAPPING_MODELS[kind].model_validate_json(await request.body())
        except ValidationError as exc:
            return invalid(exc)
        if len(app) > 64 or len(external_id) > 128:
            return problem(422, "Too long", "app at most 64, ids at most 128 characters")
        if refused := await _unknown_app(app, mappings, "mapping"):
            return refused
        stmt = pg_insert(mappings).values(
            app=app, kind=kind, external_id=external_id, value=value.model_dump(mode="json")
        )
        async with uow.begin() as tx:
            before = await tx.conn.scalar(
                select(mappings.c.value).where(_key(app, kind, external_id)).with_for_update()
            )
            await tx.conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[mappings.c.app, mappings.c.kind, mappings.c.external_id],
                    set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                )
            )
            after = value.model_dump(mode="json")
            target = f"{app}/{kind}/{external_id}"
            await audit.record(
                tx.conn, who.name, "platform.mapping.put", target, before=before, after=after
            )
        return {"app": app, "kind": kind, "external_id": external_id, **value.model_dump()}

    def _key(app: str, kind: str, external_id: str) -> Any:
        return (
            (mappings.c.app == app)
            & (mappings.c.kind == kind)
            & (mappings.c.external_id == external_id)
        )

    @router.get(
        "/{app}/mappings/{kind}/{external_id:path}",
        responses=_of_known_app("mapping", "no such mapping", bound=MAPPINGS_BOUND),
    )
    async def get_mapping(
        app: AppName, kind: MappingKind, external_id: ExternalId, request: Request, who: Reader
    ) -> Any:
        no_mapping_read(request, who)
        async with uow.db.engine.connect() as conn:
            value = await conn.scalar(select(mappings.c.value).where(_key(app, kind, external_id)))
        if value is None:
            if refused := await _unknown_app(app, mappings, "mapping"):
                return refused
            return problem(404, "No such mapping", f"app {app!r} maps no {kind} {external_id!r}")
        return {"app": app, "kind": kind, "external_id": external_id, **value}

    @router.delete(
        "/{app}/mappings/{kind}/{external_id:path}",
        status_code=204,
        responses=_of_known_app("mapping", HOLDS_NUL),
    )
    async def delete_mapping(
        app: AppName, kind: MappingKind, external_id: ExternalId, who: Writer
    ) -> Response:
        if refused := await _unknown_app(app, mappings, "mapping"):
            return refused
        async with uow.begin() as tx:
            before = await tx.conn.scalar(
                delete(mappings).where(_key(app, kind, external_id)).returning(mappings.c.value)
            )
            if before is not None:
                target = f"{app}/{kind}/{external_id}"
                await audit.record(
                    tx.conn, who.name, "platform.mapping.delete", target, before=before
                )
        return Response(status_code=204)

    @router.get(
        "/{app}/mappings",
        responses=_of_known_app("mapping", HOLDS_NUL, bound=MAPPINGS_BOUND),
    )
    async def list_mappings(
        app: AppName,
        request: Request,
        who: Reader,
        start: Position | None = MAPPINGS_CURSOR,
        limit: Limit = 100,
    ) -> Any:
        """An app's mappings by kind and platform id, a page at a time (``next_cursor``)."""
        no_mapping_read(request, who)
        if refused := await _unknown_app(app, mappings, "mapping"):
            return refused
        key = (mappings.c.kind, mappings.c.external_id)
        query = select(mappings.c.kind, mappings.c.external_id, mappings.c.value)
        query = query.where(mappings.c.app == app)
        if start is not None:
            query = query.where(after(key, start))
        async with uow.db.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(*key).limit(limit + 1))).all()
        rows, next_cursor = page(rows, limit, lambda r: (r.kind, r.external_id))
        found = [{"kind": k, "external_id": e, **v} for k, e, v in rows]
        return {"app": app, "mappings": found, "next_cursor": next_cursor}

    @router.get("/problems", responses=_of_known_app("problem", bound=OTHER_APP))
    async def list_problems(
        request: Request,
        who: Reader,
        app: str | None = None,
        all: bool = False,
        start: Position | None = PROBLEMS_CURSOR,
        limit: Limit = 100,
    ) -> Any:
        """Problems of pushed orders (open only, unless ``all``), the newest first (by when
        first seen), a page at a time (``next_cursor``). A token bound to its app (a
        platform's) is answered that app's alone, each without its ``detail``
        (:data:`WITHHELD`): which of its pushes were answered ``problem``, of what kinds, and
        whether settled since."""
        reach = apps_read(request, who, app, "problems")
        shown = [c for c in problems.c if reach is None or c.name not in WITHHELD]
        query = await _of_apps(select(*shown), problems, app, reach, "problem")
        if isinstance(query, Response):
            return query
        if not all:
            query = query.where(problems.c.resolved_at.is_(None))
        return await _page(query, PROBLEMS_ORDER, start, limit, "problems")

    async def _of_apps(
        query: Select[Any], table: Table, app: str | None, reach: list[str] | None, rows: str
    ) -> Select[Any] | Response:
        """``query`` of ``table`` narrowed to ``app`` (a 422 if unknown: :func:`_unknown_app`)
        for an unbound token, to the apps it reaches (``reach``, :func:`apps_read`) for a
        bound one."""
        if reach is not None:
            return query.where(table.c.app.in_(reach))
        if app is None:
            return query
        if refused := await _unknown_app(app, table, rows):
            return refused
        return query.where(table.c.app == app)

    @router.post(
        "/problems/resolve",
        responses=_of_known_app("problem", f"an order the adapter has never seen: {UNKNOWN_ORDER}"),
    )
    async def resolve_problems(body: Resolve, who: Writer) -> Any:
        """Close a pushed order's open problems, once settled by hand (an order cancelled on
        the platform after we placed it, say): the others close by themselves when a push
        finds them mended. Resolving a ``paid_after_cancelled`` problem forgets the
        cancellation of the order seen before it was placed (a push finding it paid then
        places it); resolving nothing forgets nothing. An app mistyped is refused, as by the
        list (it was "no open problem", the problem left open under the real name), and so is
        an order the adapter keeps nothing of (a 404: it was "no open problem" too)."""
        if refused := await _unknown_app(body.app, problems, "problem"):
            return refused
        async with uow.begin() as tx:
            kinds = await handlers.resolve_problems(tx, body.app, body.platform_order_id)
            if not kinds and not await handlers.order_known(tx, body.app, body.platform_order_id):
                why = f"the adapter has never seen order {body.platform_order_id!r} of {body.app}"
                return problem(404, "Unknown order", f"{why}: {UNKNOWN_ORDER}")
            if "paid_after_cancelled" in kinds:
                await handlers.forget_closed(tx, body.app, body.platform_order_id)
            if kinds:
                target = f"{body.app}/{body.platform_order_id}"
                detail = {"kinds": kinds}
                await audit.record(
                    tx.conn, who.name, "platform.problems.resolve", target, detail=detail
                )
        return {"resolved": kinds}

    @router.get("/callbacks", responses=_of_known_app("callback", bound=OTHER_APP))
    async def list_callbacks(
        request: Request,
        who: Reader,
        app: str | None = None,
        status: CallbackStatus | None = None,
        order_id: OrderId | None = None,
        platform_order_id: str | None = None,
        start: Position | None = CALLBACKS_CURSOR,
        limit: Limit = 100,
    ) -> Any:
        """Status callbacks and their attempts, the newest first, a page at a time
        (``next_cursor``); of one order by our ``order_id`` or the platform's
        ``platform_order_id``. A token bound to its app (a platform's) is answered that app's
        alone, without our trace context (:data:`WITHHELD_CALLBACK`): another's order is as if
        it had none."""
        reach = apps_read(request, who, app, "callbacks")
        shown = [c for c in callbacks.c if reach is None or c.name not in WITHHELD_CALLBACK]
        query = await _of_apps(select(*shown), callbacks, app, reach, "callback")
        if isinstance(query, Response):
            return query
        if status is not None:
            query = query.where(callbacks.c.status == status)
        if order_id is not None:
            query = query.where(callbacks.c.order_id == order_id)
        if platform_order_id is not None:
            query = query.where(callbacks.c.platform_order_id == platform_order_id)
        return await _page(query, CALLBACKS_ORDER, start, limit, "callbacks")

    async def _page(
        query: Select[Any], key: Key, start: Position | None, limit: int, name: str
    ) -> dict[str, Any]:
        """A page of ``query``'s rows as ``{name: [...], "next_cursor"}``."""
        async with uow.db.engine.connect() as conn:
            rows = (await conn.execute(newest_first(query, key, start, limit))).mappings().all()
        names = [c.name for c in key]
        rows, next_cursor = page(rows, limit, lambda r: tuple(r[n] for n in names))
        return {name: [_jsonable(r) for r in rows], "next_cursor": next_cursor}

    @router.post(
        "/callbacks/retry",
        responses=problem_responses(
            {
                422: f"{BAD_INPUT}, or no app or event ids, or an app unknown (not"
                " configured, no callback of it)"
            },
        ),
    )
    async def retry_callbacks(body: Requeue, who: Writer) -> Any:
        """Send callbacks again now (of one app, or the ones named, or those of them of the
        app): once the platform's status API works again, or its secret is put right. The
        ``failed`` ones from a first attempt, and the ``pending`` ones, which would otherwise
        wait out their backoff (up to the cap, minutes after the API is back), their attempts
        kept (:data:`RETRIED`); not those being sent (their claim's, which records them) nor
        those delivered. The answer and the audit row carry how many (``requeued``), how many
        of them were ``failed`` and ``pending``, and the first ``LISTED`` of their event ids
        (``GET /platform/callbacks`` lists them all)."""
        if body.app is not None and (
            refused := await _unknown_app(body.app, callbacks, "callback")
        ):
            return refused
        query = update(callbacks).returning(callbacks.c.event_id)
        if body.app is not None:
            query = query.where(callbacks.c.app == body.app)
        if body.event_ids is not None:
            query = query.where(callbacks.c.event_id.in_(body.event_ids))
        async with uow.begin() as tx:
            counts: dict[str, int] = {}
            ids: list[str] = []
            for status, values in RETRIED.items():
                these = query.where(callbacks.c.status == status).values(**values)
                requeued = (await tx.conn.execute(these)).scalars().all()
                counts[status] = len(requeued)
                ids += requeued
            ids.sort()
            told = {"requeued": len(ids), **counts, "event_ids": ids[:LISTED]}
            if ids:
                target = body.app or "*"
                await audit.record(
                    tx.conn, who.name, "platform.callbacks.retry", target, detail=told
                )
                tx.signal(handlers.CALLBACKS_DUE)
        return told

    async def _unknown_app(app: str, table: Table, rows: str) -> Response | None:
        """A 422 for an ``app`` neither configured nor with any row in ``table`` (of ``rows``),
        where a list of it was empty, as if all were well, and a mapping of it taken: a name
        mistyped. An app this instance lacks but whose rows there are may be another
        instance's, newer settings (callbacks.claim_due: its callbacks wait for it), or one
        configured no longer."""
        if app in apps:
            return None
        async with uow.db.engine.connect() as conn:
            found = await conn.execute(select(table.c.app).where(table.c.app == app).limit(1))
            if found.first() is not None:
                return None
        why = f"no app {app!r}: not in CARAVAN_PLATFORM_APPS, and no {rows} of it"
        return problem(422, "Unknown app", f"{why} ({the_apps(apps)})")

    return router


UNKNOWN_ORDER = (
    "none placed through it, no problem of it, open or resolved, none seen cancelled lately (a"
    " push finding it unpaid keeps nothing, one finding it cancelled keeps it minutes): a typo?"
    " nothing changed"
)
"""Why ``POST /platform/problems/resolve`` answers 404: an order the adapter keeps no row of."""


class Resolve(BaseModel):
    """The pushed order whose open problems operations have settled."""

    app: str = Field(min_length=1, max_length=64)
    platform_order_id: str = Field(min_length=1, max_length=64)


def _fetchable(order_id: str) -> str:
    if unfetchable := fetchable(order_id):
        raise ValueError(unfetchable)
    return order_id


class Refetch(BaseModel):
    """The platform order operations have fetched and decided on again."""

    app: str = Field(min_length=1, max_length=64)
    platform_order_id: Annotated[str, AfterValidator(_fetchable)] = Field(pattern=ORDER_REF_PATTERN)


def _event_id(given: str) -> str:
    stored = as_stored(given)
    if stored is None:
        raise ValueError("not an event id: a UUID, as GET /platform/callbacks lists them")
    return stored


EventId = Annotated[str, AfterValidator(_event_id)]
"""A callback's event id, taken in upper case too (kept in lower case)."""


def _order_id(given: str) -> str:
    stored = as_stored(given)
    if stored is None:
        raise ValueError(
            "not an order id of Caravan's, a UUID (GET /orders names it, found by"
            " source=platform/APP and order_ref): the platform's own is `platform_order_id`"
        )
    return stored


OrderId = Annotated[str, AfterValidator(_order_id)]
"""Caravan's order id, a UUID taken in upper case too: a platform's (``FM-0001``) was
answered an empty list, as if the order had no callback."""


class Requeue(BaseModel):
    """Which callbacks to send again: an app's, those of these events, or those of
    these events of the app; one or the other at least (``{}`` is refused, not read as every
    app's)."""

    app: str | None = Field(None, min_length=1, max_length=64)
    event_ids: list[EventId] | None = Field(None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _names_some(self) -> "Requeue":
        if self.app is None and self.event_ids is None:
            raise ValueError("name an app, or event ids, of the callbacks to send again")
        return self


def _jsonable(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dict(row).items()}

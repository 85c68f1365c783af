"""What every service's HTTP API shares: problem+json errors (and their OpenAPI
documentation, :func:`problem_responses`), ``/healthz`` and ``/metrics``, bearer-token
authentication (:func:`require`) and a limit on request bodies."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.telemetry import TelemetryConfig
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api import (
    DATABASE_AWAY,
    DATABASE_BUSY,
    DATABASE_MUTE,
    DATABASE_REFUSES,
    SERVICE_LOOP_LATE,
    field_errors,
    unknown_fields,
)
from shared.auth.guard import FailureLimiter, Guard
from shared.auth.scopes import SCOPES
from shared.auth.tokens import Principal
from shared.db import Database, fault, reason
from shared.db.engine import (
    REFUSALS,
    REFUSED_LATELY_SECONDS,
    Bound,
    Kind,
    NoAnswer,
    address,
    described,
    given_up,
    refused_for,
    retried_fault,
)
from shared.logs import FAULT, answers_again, phones_masked, retried
from shared.loop_lag import LoopLag, not_heard
from shared.metrics import (
    DB_POOL_CAPACITY,
    DB_POOL_CONNECTIONS,
    EVENT_LOOP_LAG,
    HTTP_REQUEST_SECONDS,
    exposition,
)
from shared.settings import Settings
from shared.stall import Stalls, consumer_said, relay_said
from shared.telemetry import record_failure, serving

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
_TITLES = {
    401: "Unauthorized",
    403: "Forbidden",
    413: "Request body too large",
    429: "Too many failed attempts",
}


def problem(status: int, title: str, detail: str = "", **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class Problem(BaseModel):
    """An RFC 9457 problem (``application/problem+json``), as :func:`problem` answers it."""

    model_config = ConfigDict(extra="allow")  # some say more: an order_id, what is down
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] = Field(
        default_factory=list, description="for invalid input: each {field, message}"
    )


TOKEN_PROBLEMS = {
    401: "no bearer token, or one unknown or revoked",
    403: "the token lacks the operation's scope",
    429: "too many failed attempts from this address (see Retry-After)",
}
"""What :func:`require` may answer, before the route does anything."""
ANY_PROBLEMS = {
    413: "the body is larger than the limit",
    503: "the database is not reachable, or did not answer in time (see Retry-After)",
}
"""What any route may answer: :class:`BodyLimit`, and the database away (the token check
reads it too)."""
BAD_INPUT = "the request does not match its schema"
RACE_LOST = (
    "another request changed the same data at the same moment, and this one's change was"
    " undone: send it again"
)
"""The detail of the 409 of a request whose commit lost a race (:func:`_database_error`)."""
WRITES_PROBLEMS = {409: f"the commit lost a race: {RACE_LOST}"}
"""What a route that writes rows at its commit may answer (:func:`_database_error`): a row it
held for the commit (``Tx.insert_later``) may meet the key another request wrote meanwhile.
The only 409 of a race: a unique violation of a statement of the route's own is not one."""
LINE_BREAK = "an id in the path holds a line break: no route takes it"
"""A 404 of a route whose path id may hold ``/`` (``{id:path}``), whose pattern stops at a
line break: say it on one that answers no 404 of its own (a ``PUT``)."""


def problem_responses(
    described: dict[int, str] | None = None,
    token: bool = True,
    model: type[Problem] = Problem,
    writes: bool = False,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem answers, e.g.
    ``problem_responses({404: "no such order"})``, with those every route may give
    (:data:`ANY_PROBLEMS`), unless ``token`` is false those of the token check
    (:data:`TOKEN_PROBLEMS`), and for a route that ``writes`` rows at its commit (a ``POST``,
    ``PUT``, ``PATCH`` or ``DELETE`` whose transaction holds rows for it of a table with a
    unique key: ``Tx.insert_later``, not the outbox's nor the audit trail's serial) its race
    lost at commit (:data:`WRITES_PROBLEMS`; a 409 of its own is said beside it). Given as a
    router's ``responses``, they are each of its routes'; a route's own add to them or say
    one more precisely. A route with parameters
    documents 422 (else FastAPI documents its own validation error, a list of ``{loc, msg,
    type}`` as application/json, which is not what :func:`invalid` answers)."""
    schema = model.model_json_schema()
    common = (TOKEN_PROBLEMS if token else {}) | ANY_PROBLEMS | (WRITES_PROBLEMS if writes else {})
    own = dict(described or {})
    if writes and 409 in own:
        own[409] = f"{own[409]}; or {WRITES_PROBLEMS[409]}"
    return {
        code: {"description": text, "content": {PROBLEM: {"schema": schema}}}
        for code, text in (common | own).items()
    }


NOT_JSON = "the body is not JSON (UTF-8)"
"""The detail of a 422 of a body that does not parse as JSON, its error saying where."""


def invalid(
    exc: ValidationError | RequestValidationError, title: str = "Invalid request"
) -> JSONResponse:
    """The contract's 422 of a request its schema refuses, each field at fault in ``errors``;
    the fields the body holds that the route does not know also in ``unknown_fields`` (absent
    where none is), for a client to tell a service older than itself by the error's type,
    not by pydantic's words of it."""
    unparsed = any(e["type"] == "json_invalid" for e in exc.errors())
    said = NOT_JSON if unparsed else "the request does not match its schema"
    unknown = unknown_fields(exc)
    extra = {"unknown_fields": unknown} if unknown else {}
    return problem(422, title, said, errors=field_errors(exc), **extra)


def refused_body(said: str, title: str = "Invalid request", field: str = "body") -> JSONResponse:
    """The contract's 422 for a body refused whole (or the one ``field`` of it that a route
    reading its own body refuses), saying why in its detail and in its one error, as
    :func:`invalid` names each field at fault."""
    return problem(422, title, said, errors=[{"field": field, "message": said}])


def _without_nul(given: str) -> str:
    if "\x00" in given:
        raise PydanticCustomError("nul", "must not contain NUL")
    return given


NO_NUL = AfterValidator(_without_nul)
"""Of every path id (``Annotated[str, Path(...), NO_NUL]``): an id holding NUL, which
PostgreSQL cannot store, names nothing there is, so a call on it is 404, as the orders API
answers (a ``PUT``, which stores the id, 422); it reached PostgreSQL, whose refusal (22021)
made a read 422 "a value cannot be stored" (:func:`nul_in_path`)."""


def _in_utc(given: datetime) -> datetime:
    try:
        return given.astimezone(UTC)
    except OverflowError:  # year 1 at +01:00, 9999-12-31T23:00 at -01:00: none in UTC
        raise PydanticCustomError("time", "must fall between the years 1 and 9999 in UTC") from None


Time = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A time a query takes (``?since=``): ISO 8601 with its zone (one without is a 422: whose
day it names is not known), in UTC; one that has no UTC time is a 422, not the 500 of the
driver's OverflowError."""
UNTIL_NOT_AFTER_SINCE = "until is not after since"
"""Said among a route's 422s where it takes ``since`` and ``until`` (:func:`refused_period`)."""


def refused_period(since: datetime | None, until: datetime | None) -> JSONResponse | None:
    """The 422 of a query's time that holds nothing: ``until`` (excluded) at or before
    ``since``, a mistake (the two options swapped, or one day given to both) that would answer
    an empty list as if nothing had happened in it; None for any other. Every route taking
    ``since`` and ``until`` asks it: ``GET /orders``, ``GET /repayments``, ``GET /payables``."""
    if since is not None and until is not None and until <= since:
        return refused_body("`until` must be after `since`", field="query.until")
    return None


def nul_in_path(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """404 for a path id holding NUL (:data:`NO_NUL`) but on a ``PUT``; None for any other
    error."""
    nul = [e["loc"][-1] for e in exc.errors() if e["type"] == "nul" and e["loc"][0] == "path"]
    if not nul or request.method == "PUT":
        return None
    return problem(404, "Not Found", f"no {nul[0]} holds NUL (PostgreSQL cannot store one)")


def not_json(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """The contract's 422 for a JSON route's body sent as another type (a browser's fetch
    with a string body says text/plain, ``curl -d`` a form type), saying which type to send:
    FastAPI leaves such a body unread, as bytes, and the 422 said "Input should be a valid
    dictionary" whatever it held. (A body with no ``Content-Type`` is read as JSON:
    :func:`create_app`.) None for any other error."""
    if not isinstance(exc.body, bytes) or all(e["loc"] != ("body",) for e in exc.errors()):
        return None
    return refused_body(send_json(request.headers.get("content-type")))


def send_json(given: str | None) -> str:
    """What a 422 says of a JSON body sent with the ``Content-Type`` ``given``, or none."""
    said = "the body has no Content-Type" if given is None else f"the body is {given[:100]}"
    return f"{said}: send Content-Type: application/json"


def not_utf8(error: UnicodeDecodeError) -> str:
    """What a 422 says of a body that is not UTF-8: where, and why."""
    return f"not UTF-8: {error.reason} at byte {error.start}"


def unreadable_body(exc: StarletteHTTPException) -> JSONResponse | None:
    """The contract's 422 for a JSON body FastAPI could not decode, which it answered 400
    "There was an error parsing the body": bytes that are not UTF-8 (GBK text, which a
    county storefront may well send, or ``b"\\xff{...}"``) or JSON nested too deep for the
    parser (thousands of ``[``). None for any other HTTP exception."""
    cause = exc.__cause__
    if exc.status_code != 400:
        return None
    if isinstance(cause, UnicodeDecodeError):
        said = not_utf8(cause)
    elif isinstance(cause, RecursionError):
        said = "not JSON this API reads: nested too deep"
    else:
        return None
    return refused_body(said)


BEARER = {"WWW-Authenticate": 'Bearer realm="caravan"'}
NO_TOKEN = "a bearer token is required"
"""The detail of the 401 of a request that sent no token."""
COOKIE = "caravan_token"
_SCHEME = HTTPBearer(auto_error=False, description="a Caravan API token (`caravan tokens issue`)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_SCHEME)]


def require(*scopes: str) -> Any:
    """The dependency of every route but ``/healthz``: a valid token carrying one of
    ``scopes`` (``Authorization: Bearer``, or the ops page's cookie). Missing, unknown or
    revoked: 401; no such scope: 403; too many failures from the address: 429. It runs
    before the route acts, so a refused call changes nothing; a body that cannot be read is
    answered by it first too (:func:`refusal_first`).
    Use it as ``dependencies=[require(...)]`` or as a ``Principal`` parameter."""
    unknown = set(scopes) - SCOPES.keys()
    assert scopes and not unknown, f"unknown scope(s) {unknown}"

    async def authorize(request: Request, credentials: Credentials) -> Principal:
        return await authorize_token(request, _token(request, credentials), scopes)

    authorize.scopes = scopes  # type: ignore[attr-defined]  # read by refusal_first
    return Depends(authorize)


def _token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    token = credentials.credentials if credentials is not None else None
    if token is None and getattr(request.app.state, "token_cookie", False):
        token = request.cookies.get(COOKIE)
    return token


async def refusal_first(request: Request) -> JSONResponse | None:
    """The answer of the route's token check (:func:`require`: 401, 403, 429), or None if it
    lets the call through, for a request whose body could not be read: FastAPI reads the
    body before it runs the dependencies, so a call without a token and with a broken body
    was answered 422, naming the schema's fields to anyone, where the contract says 401."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    calls = [d.call for d in dependant.dependencies] if dependant is not None else []
    scopes = next((c.scopes for c in calls if hasattr(c, "scopes")), None)
    if scopes is None:
        return None
    try:
        await authorize_token(request, _token(request, await _SCHEME(request)), scopes)
    except StarletteHTTPException as exc:
        return http_problem(exc)
    return None


def http_problem(exc: StarletteHTTPException, request: Request | None = None) -> JSONResponse:
    """An HTTP exception as a problem body, with its headers. One whose detail is only its
    status's phrase (Starlette's unknown route or method) says the request's method and path
    instead, and for a 405 the methods the path takes."""
    phrase = HTTPStatus(exc.status_code).phrase
    detail = str(exc.detail)
    if detail == phrase and request is not None:
        asked = f"{request.method} {request.url.path[:200]}"
        allowed = (exc.headers or {}).get("Allow")
        detail = f"no route {asked}" if allowed is None else f"{asked}: it takes {allowed}"
    response = problem(exc.status_code, _TITLES.get(exc.status_code, phrase), detail)
    response.headers.update(exc.headers or {})
    return response


THROTTLED = (
    "too many failed attempts from this address; until then only a token used here before is"
    " let in, not one just issued (stop whatever keeps sending a refused token)"
)
"""The detail of the 429 of an address over the failed-attempt limit. A marketplace drill's
platform, its token revoked while a worker of its still polled with it, was refused its new
token 429 "too many failed attempts from this address", never read valid there: a guess, for
all the service knew, and nothing said why a token just issued was refused, nor what kept the
address refused (the worker's 401s)."""


async def authorize_token(
    request: Request, token: str | None, scopes: tuple[str, ...]
) -> Principal:
    """What :func:`require` checks, for a token that came some other way (a login form)."""
    guard: Guard = request.app.state.guard
    client = request.client.host if request.client else "unknown"
    method, path = request.method, request.url.path
    wait = guard.limiter.retry_after(client)
    # A token read valid before is no guess: its client is not blocked by the failures of
    # others at its address (a proxy, a stale worker), and it is checked as ever below.
    if wait is not None and not (token and guard.known(token)):
        guard.refused("throttled", client, method, path)
        raise StarletteHTTPException(429, THROTTLED, {"Retry-After": str(wait)})
    if not token:
        guard.refused("missing", client, method, path)
        raise StarletteHTTPException(401, NO_TOKEN, BEARER)
    found = await guard.lookup(token)
    if found.principal is None:
        guard.refused(found.refused or "unknown", client, method, path, found.name)
        invalid = {"WWW-Authenticate": 'Bearer realm="caravan", error="invalid_token"'}
        raise StarletteHTTPException(401, "the token is not valid", invalid)
    if not found.principal.scopes & set(scopes):
        raise scope_refused(request, found.principal, scopes)
    return found.principal


def scope_refused(
    request: Request, principal: Principal, scopes: Sequence[str], needs: str = ""
) -> StarletteHTTPException:
    """The 403 of a valid token with none of ``scopes``, counted and logged as a refusal of
    its scope (which the address's limit does not count); ``needs`` says what needs them,
    where the route took the token for the rest of what it does (``GET /orders`` of every
    buyer, which needs ops, where one buyer's needs orders:read)."""
    said = f"the token {principal.name!r} lacks the scope {' or '.join(scopes)}"
    return refused_403(request, principal, said + needs, scopes)


def refused_403(
    request: Request, principal: Principal, detail: str, scopes: Sequence[str] = ()
) -> StarletteHTTPException:
    """The 403 of a valid token refused what the route took it for: lacking ``scopes``
    (:func:`scope_refused`), or, with none, beyond its binding (a platform's token asking for
    another app's problems); counted and logged as a refusal of its scope."""
    client = request.client.host if request.client else "unknown"
    guard: Guard = request.app.state.guard
    guard.refused("scope", client, request.method, request.url.path, principal.name, scopes)
    return StarletteHTTPException(403, detail)


def install_auth(
    app: FastAPI, service: str, db: Database, settings: Settings, cookie: bool = False
) -> None:
    """Give ``app`` (``service``'s, for its counters) the token checks of :func:`require` and
    the body limit."""
    limiter = FailureLimiter(settings.auth_max_failures, settings.auth_failure_window_seconds)

    def spare() -> AsyncEngine | None:
        # The pool all in use, a token is read on the connection /healthz asks on (a read a
        # token every auth_cache_seconds, one at a time: Guard.sparing), not waited for one of
        # the pool's: a scrape answers.
        return db.apart if db.busy() is not None else None

    app.state.guard = Guard(service, db.engine, settings.auth_cache_seconds, limiter, spare)
    app.state.token_cookie = cookie
    app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
    app.add_middleware(Deadline, seconds=settings.http_db_timeout_seconds, engine=db.engine)
    # The token check reads the database too: with it away, every app answers 503 (the
    # operations page answered 500 "Internal Server Error"). Away is also a host not
    # reachable or not resolved (OSError: a container restarting), a connect timed out
    # (TimeoutError, an OSError) and the pool exhausted (SQLAlchemy's TimeoutError).
    for kind in (
        DBAPIError,
        sa_exc.TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
    ):
        app.add_exception_handler(kind, _database_error)


async def _database_error(request: Request, exc: Exception, unheard: str | None = None) -> Response:
    """A database error: 422 for a value PostgreSQL cannot take that the request held (its
    checks let it through), 409 for a race lost at commit (send it again), 503 for the
    database away (retry); anything else is raised on (a service's answer is then a 500
    problem: :func:`_unexpected`). ``unheard``: the request's database work given up
    (:class:`Deadline`) while the service's own event loop was late by as much
    (:func:`shared.loop_lag.not_heard`), said so, a 503 still, logged as that fault of its
    own (:data:`LOOP_LATE`), not PostgreSQL away's."""
    found = fault(exc)
    if found.kind is Kind.BAD_VALUE:
        detail = f"a value cannot be stored: {str(found.error).splitlines()[0][:300]}"
        return problem(422, "Invalid request", detail)
    path = request.url.path[:200]
    if found.kind is Kind.RACE_LOST:
        # Another request (of this instance or another) wrote the row first, between this
        # one's read and its commit, which was undone: no bug, and sent again, the request
        # finds that row. One line naming the constraint, never the row's values.
        log.warning("%s %s: 409, lost a race at commit: %s", request.method, path, reason(exc))
        return problem(409, "Conflict", RACE_LOST)
    if not found.kind.transient:
        raise exc
    guard: Guard = request.app.state.guard  # its engine is the app's database
    if unheard is not None:  # the loop's, not PostgreSQL's: no outage begun or ended
        where = address(guard.engine)
        extra = retried(LOOP_LATE)
        log.warning(
            "%s %s: 503, %s (PostgreSQL at %s)", request.method, path, unheard, where, extra=extra
        )
        return unavailable("Service Unavailable", f"{unheard}; retry")
    # One line, no traceback (it passes by itself), naming what failed: an OSError that is
    # not the database's would otherwise be answered so without a word.
    said = described(exc, address(guard.engine))
    busy = found.kind in (Kind.TOO_MANY_CONNECTIONS, Kind.POOL_EXHAUSTED)
    refused = refused_for(exc)
    if refused is not None:
        detail = f"{DATABASE_REFUSES}: {refused}; retry"
    elif isinstance(found.error, NoAnswer):  # a server frozen: reachable, and mute
        detail = f"{DATABASE_MUTE} {found.error.seconds:g} s; retry"
    else:
        detail = DATABASE_BUSY if busy else DATABASE_AWAY
    log.warning(
        "%s %s: 503, %s: %s; %r",
        request.method,
        path,
        detail.removesuffix("; retry"),
        said,
        exc,
        extra=retried_fault(exc),
    )
    return unavailable("Service Unavailable", detail)


RETRY_SECONDS = 5
"""The ``Retry-After`` of a 503 that passes by itself (PostgreSQL away, the orders API for the
operations page), unless a route knows better: PostgreSQL restarting or failing over is away
for seconds to a minute, and each request meanwhile tries a connection to a server starting up:
a client asked back every second sends five times as many, each to be refused
again, where this costs it at most a few seconds once the database is back."""


def unavailable(
    title: str, detail: str, retry_after: int = RETRY_SECONDS, **extra: Any
) -> JSONResponse:
    """A 503 problem (with ``extra`` members), to be asked again (``Retry-After``,
    :data:`RETRY_SECONDS` unless said): something the answer needs is away for now."""
    response = problem(503, title, detail, **extra)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _unexpected(method: str, path: str, exc: Exception, span: Span) -> Response:
    """A 500 problem for an error nothing else answers (a bug, a database error that is
    neither the request's value nor an outage): its traceback is logged once, in the
    request's trace, and the client is told nothing of it (it may quote the input)."""
    log.error("%s %s failed", method, path, exc_info=exc)
    record_failure(span, exc)
    span.set_status(Status(StatusCode.ERROR, exc.__class__.__name__))
    return problem(500, "Internal Server Error", "the request failed unexpectedly; it is logged")


class BodyLimit:
    """413 for a body over ``max_bytes``: at once when ``Content-Length`` says so, else as
    soon as the chunks read pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise StarletteHTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"the body is larger than {self.max_bytes} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, "Request body too large", self._detail())(scope, receive, send)


class Deadline:
    """A request's bound on its database work, ``seconds`` (``http_db_timeout_seconds``; 0:
    none): past it, what the request waits on is cancelled and it is answered as PostgreSQL
    not answering, a 503 with ``Retry-After`` (:func:`_database_error`), where a server frozen
    held a pooled connection's client for ``db_answer_timeout_seconds`` (two minutes, made
    for consumers waiting out a lock) and a new connection's for the token check's 4 s and
    the connect's 10 s. The bound waits while the request reads the client's body (a slow
    client's time, not the database's) and while it waits on another service
    (:func:`elsewhere`), and ends with the answer's start. Cancelled waiting on anything
    else, the request fails as it would (a 500, logged with where it waited). PostgreSQL's
    answer given up while the service's own event loop was late by a quarter of the bound or
    more since the request began (:func:`shared.loop_lag.not_heard`: a long synchronous step,
    a CPU short for the load) is said so, a 503 still: the answer may have come and not been
    read in time, where it said the database did not answer.

    A write whose commit was sent and not answered may still be made once the server goes on
    (cancelled, its connection is closed, not pooled again): the client's retry is told what
    came of it where the route takes an ``Idempotency-Key`` (``POST /orders`` answers the
    order placed by the first), as after any connection lost at commit."""

    def __init__(self, app: ASGIApp, seconds: float, engine: AsyncEngine) -> None:
        self.app = app
        self.seconds = seconds
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.seconds:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        bound = Bound(self.seconds)
        started = False

        async def receiving() -> Message:
            when = bound.when()
            if when is None:
                return await receive()
            left = when - loop.time()
            bound.reschedule(None)
            try:
                return await receive()
            finally:
                if not started:
                    bound.reschedule(loop.time() + left)

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not bound.expired:
                started = True
                bound.reschedule(None)
            await send(message)

        try:
            async with bound:
                request_bound = _REQUEST_BOUND.set(bound)
                try:
                    await self.app(scope, receiving, sending)
                finally:
                    _REQUEST_BOUND.reset(request_bound)
        except TimeoutError as exc:
            unanswered = given_up(self.engine, self.seconds, exc) if bound.expired else None
            if unanswered is None or started:
                raise
            unanswered.__cause__ = exc
            request = Request(scope)
            lag: LoopLag | None = getattr(request.app.state, "loop_lag", None)
            late = 0.0
            if lag is not None and isinstance(unanswered, NoAnswer):
                late = lag.since(began)
            unheard = not_heard(late, self.seconds)
            response = await _database_error(request, unanswered, unheard)
            await response(scope, receive, send)


_REQUEST_BOUND: ContextVar[Bound | None] = ContextVar("request_bound", default=None)
"""The :class:`Deadline` bound of the request being answered, if any."""


@contextlib.contextmanager
def elsewhere() -> Iterator[None]:
    """The request's work inside waits on another service, which bounds its own database
    work and answers why it gave it up: its :class:`Deadline` waits meanwhile, as it does
    while the client sends its body. The operations page's order lookup waits so on the
    orders API, which answers its 503 within the same setting's bound: the page's own, begun
    first, ended the wait before that answer, a 500 where the API said why."""
    bound = _REQUEST_BOUND.get()
    when = None if bound is None else bound.when()
    if bound is None or when is None:
        yield
        return
    loop = asyncio.get_running_loop()
    left = when - loop.time()
    bound.reschedule(None)
    try:
        yield
    finally:
        bound.reschedule(loop.time() + left)


KAFKA_SILENT_AFTER = 30.0
"""Seconds without a word from Kafka after which ``/healthz`` says it is down: six of the
consumer-lag samples a service takes every 5 s, whatever its traffic. Not a setting, as the
stall thresholds are (``CARAVAN_CONSUMER_STALL_SECONDS``): what they wait out depends on the
deployment's work (how long a handler or a publish may take), what this one does not (Kafka
answering a sample at all), and it follows the sample interval, not a setting either. A
shorter silence would name one slow sample (the client opened again after a failure) as
Kafka away; a monitor that wants more patience waits on the degraded answer (a 200, which
no load balancer acts on) for as long as it likes."""


class KafkaContact:
    """When a service last heard from its Kafka cluster: its start (its consumer joined) and
    each consumer-lag sample that succeeded (:mod:`shared.observe`), which asks the brokers
    every few seconds even when no order comes, so a quiet service stays healthy."""

    def __init__(
        self, silent_after: float = KAFKA_SILENT_AFTER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.silent_after = silent_after
        self.clock = clock
        self.last = clock()
        self.missing: list[str] = []

    def heard(self, missing: Iterable[str] = ()) -> None:
        """Kafka answered; of the topics asked about, ``missing`` it has not (a service
        started before ``caravan prepare`` made them)."""
        self.last = self.clock()
        self.missing = list(missing)

    def silence(self) -> float | None:
        """Seconds since Kafka last answered, once that is more than ``silent_after``."""
        silent = self.clock() - self.last
        return silent if silent > self.silent_after else None


def kafka_silence(silence: float, late: float, silent_after: float = KAFKA_SILENT_AFTER) -> str:
    """``/healthz``'s Kafka check, Kafka not heard from for ``silence`` seconds while the
    service's own event loop was ``late`` seconds late lately (:meth:`LoopLag.lately`): the
    loop's, not Kafka's, where without that lateness the silence would not have passed
    ``silent_after`` (the samples that hear Kafka could not run: the process stopped, ``kill
    -STOP``, swapped out or short of CPU); it said ``no answer for 66 s`` of a Kafka that had
    answered all along, for a few seconds after session 62's drill thawed a service frozen a
    minute."""
    if silence - late > silent_after:
        return f"no answer for {silence:.0f} s"
    return (
        f"not asked for {silence:.0f} s: {SERVICE_LOOP_LATE} {late:.0f} s late (the process"
        " held: stopped, swapped out or short of CPU), not Kafka silent"
    )


HEALTH_DB_WITHIN = 2.0
"""Seconds ``/healthz``'s ``SELECT 1`` (its connection apart made with it, or another check's
ask on it waited for) may wait for PostgreSQL before it is said not to answer, a 503: a server
frozen (a drill stopped it 45 s) was no answer at all for as long, where a load balancer's
check gives up after a few seconds (5 s on most) and sees a timeout, not the 503 that says
why. A server that answers at all answers it in milliseconds. Not a setting: what it waits
out is PostgreSQL answering one trivial statement, not the deployment's work."""


LOOP_LATE = "the event loop late to hear PostgreSQL"
"""The fault logged when ``/healthz``'s ``SELECT 1`` or a request's database work
(:class:`Deadline`) timed out while the service's event loop was late by as much
(:func:`shared.loop_lag.not_heard`): its own, said once a minute at most, and not PostgreSQL
away's, whose end would be said as an outage's."""


UNMATCHED = "unmatched"
"""The ``route`` of ``caravan_http_request_seconds`` for a path no route takes (a 404): the
path itself would make a series of every path a client tries."""
POLLS = frozenset({"/healthz", "/metrics"})
"""The paths neither traced nor timed (``caravan_http_request_seconds``): polled every few
seconds by load balancers and Prometheus, they would be most of a quiet service's requests and
spans, and their callers time them already (Prometheus' ``scrape_duration_seconds``, the load
balancer's check)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods ``caravan_http_request_seconds`` names; any other a client sends is ``other``,
so that no client makes a series of each one it invents."""


def route_of(scope: Scope, routes: Sequence[BaseRoute], status: int) -> str | None:
    """The template of the route that took the request (``/orders/{order_id}``), or None where
    none takes its path. A request answered before routing (a body refused by its
    ``Content-Length``, a 413) is matched against ``routes`` for it; a 404 is not, which no
    route took."""
    route = scope.get("route")
    if route is None and status != 404:
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    return getattr(route, "path", None)


NO_NATIVE_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
"""FastAPI's own OpenTelemetry, off: with a tracer provider set it made a second root span of
each request, outside the caller's trace and with phone numbers in its path, and spans for
each dependency. The service's own span (:func:`shared.telemetry.serving`) continues the
caller's trace."""


def create_app(service: str, db: Database, settings: Settings) -> FastAPI:
    """``service``'s FastAPI app with the shared error handling, operational endpoints and
    auth."""
    # A body sent with no Content-Type (Python's requests with ``data=``, httpx with
    # ``content=``) is read as JSON, as FastAPI did before its strict default: the forged
    # cross-site request its strict default guards against carries no credential here (a
    # bearer token is a header, which a browser sends cross-site only after a preflight; the
    # operations page's cookie is SameSite=Strict; a platform push is signed).
    app = FastAPI(
        title=f"Caravan {service}",
        version="1",
        telemetry=NO_NATIVE_TELEMETRY,
        strict_content_type=False,
    )
    install_auth(app, service, db, settings)

    @app.middleware("http")
    async def _trace(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # The path with any phone number masked; the span is named after the route (its
        # template: one name for every order, and no phone number) once routing found it.
        started = time.perf_counter()
        polled = request.url.path in POLLS
        path = phones_masked(request.url.path)
        spanned = (
            contextlib.nullcontext(INVALID_SPAN)
            if polled
            else serving(request.method, path, request.headers)
        )
        with spanned as span:
            try:
                response = await call_next(request)
            except Exception as exc:
                response = _unexpected(request.method, path, exc, span)
            route = route_of(request.scope, app.router.routes, response.status_code)
            if route is not None:
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)
        if not polled:
            method = request.method if request.method in METHODS else "other"
            timed = HTTP_REQUEST_SECONDS.labels(
                service, method, route or UNMATCHED, str(response.status_code)
            )
            timed.observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return (
            await refusal_first(request)
            or nul_in_path(request, exc)
            or not_json(request, exc)
            or invalid(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = unreadable_body(exc)
        if unreadable is not None:
            return await refusal_first(request) or unreadable
        return http_problem(exc, request)

    down = {503: "PostgreSQL is not reachable: what is down (down) and why (checks)"}
    # A load balancer polls: its fault is a retried one, a line a minute, not one a poll;
    # its end one line (PostgreSQL away's ends with a connection made, whoever makes it).
    met: str | None = None

    @app.get("/healthz", tags=["operations"], responses=problem_responses(down, token=False))
    async def healthz(request: Request) -> Any:
        """What the service reaches and whether its work moves (``GET`` or ``HEAD``, as load
        balancers check): 503 naming what is down (``down``) and why (``detail``) when
        PostgreSQL is away, for nothing is done without it (with ``Retry-After`` where that
        passes by itself, :data:`RETRY_SECONDS`). Kafka not heard from lately
        is said (``"status": "degraded"``) with a 200: what the service takes meanwhile (an
        order, a lot) waits in its outbox and is lost to nobody, so a load balancer must not
        take it away for that. So is a topic the service reads that Kafka says it has not
        (``"kafka": "topic orders.events.v1 missing"``). So is PostgreSQL answering and
        refusing the work that lasts, met by the service's work within
        :data:`~shared.db.engine.REFUSED_LATELY_SECONDS` (``"database": "PostgreSQL refuses
        the work for now: its disk is full (SQLSTATE 53100), last met 2 s ago"``): its
        ``SELECT 1`` is answered, and it said ok while every write failed. So, when nothing
        is refused, is every connection of the service's pool in use (``"database": "busy:
        all 20 connections of the pool in use"``): the ``SELECT 1`` is asked on a connection
        kept apart from the pool (:meth:`~shared.db.Database.answers`), where it waited for
        one of the pool's and answered 503 after :data:`HEALTH_DB_WITHIN`, and a load
        balancer took a busy instance away, moving its load to the others, whose pools
        filled in turn. Its ``SELECT 1`` timed out while the service's own event loop was late
        by a quarter of the wait or more (:func:`shared.loop_lag.not_heard`: a long
        synchronous step, a CPU short for the load), it says so, a 503 still: PostgreSQL's
        answer may have come and not been read in time, where it said "cannot reach
        PostgreSQL" and operations looked at a healthy database.

        So are, while both answer, a consumer whose partitions have had records waiting
        with none handled for ``CARAVAN_CONSUMER_STALL_SECONDS`` (``"consumer": "3 records
        waiting on orders.events.v1[0], none handled for 75 s"``: a handler blocked on a
        lock, a member that stopped fetching, a transient fault retried for ever) and an
        outbox whose oldest unpublished row has stayed so, none published, for
        ``CARAVAN_OUTBOX_STALL_SECONDS`` (``"relay": "12 outbox rows unsent, none
        published for 75 s"``: the relay stuck, or Kafka refusing a row again and again).
        Neither is a 503: the HTTP API works and what it takes waits, lost to nobody, and
        taking the service away (or restarting it on a failed check) would not help what
        usually stalls them, a lock held elsewhere or a record or row that fails again
        after a restart, where it would stop the orders still taken. It is for an operator
        to look (docs/http.md). Both are the group's and the outbox's, not this
        instance's alone: every instance of the service names them."""
        nonlocal met
        checks = {"database": "ok", "kafka": "ok", "consumer": "ok", "relay": "ok"}
        passing: dict[str, str] = {}  # PostgreSQL's fault, if it passes by itself
        lag: LoopLag | None = getattr(request.app.state, "loop_lag", None)
        began = asyncio.get_running_loop().time()
        try:
            await db.answers(HEALTH_DB_WITHIN)
        except Exception as exc:  # said to anyone (no token): where and the server's words logged
            timed_out = isinstance(fault(exc).error, NoAnswer)
            late = lag.since(began) if lag is not None and timed_out else 0.0
            unheard = not_heard(late, HEALTH_DB_WITHIN)
            if unheard is not None:  # the loop's, not PostgreSQL's: no outage begun or ended
                checks["database"] = unheard
                passing = retried(LOOP_LATE)
                where = address(db.engine)
                log.warning("/healthz: %s (PostgreSQL at %s)", unheard, where, extra=passing)
            else:
                checks["database"] = described(exc, public=True)
                said = described(exc, address(db.engine))
                passing = retried_fault(exc)
                retrying = passing or retried(said)  # polled again, whatever it is
                met = retrying[FAULT]
                log.warning("/healthz: %s", said, extra=retrying)
        else:
            if met is not None:
                answers_again(log, met, f"PostgreSQL at {address(db.engine)}")
                met = None
        reachable = checks["database"] == "ok"
        if reachable and (refused := REFUSALS.lately(REFUSED_LATELY_SECONDS)) is not None:
            # Its SELECT 1 answered, and the work's writes refused: degraded, not a 503 (it
            # reads, and every instance shares the database: none is better to send to).
            checks["database"] = f"PostgreSQL refuses the work for now: {refused}"
        elif reachable and (busy := db.busy()) is not None:
            # It answered apart from the pool: the work waits for a connection of its own,
            # degraded, not a 503 (taken away, its load would fill the others' pools).
            checks["database"] = f"busy: {busy}"
            # Held by statements waiting for a lock: who holds it, or the pool looks too small.
            if (waits := await db.lock_waits(HEALTH_DB_WITHIN)) is not None:
                checks["database"] = f"{checks['database']}; {waits}"
        state = request.app.state
        contact: KafkaContact | None = getattr(state, "kafka_contact", None)
        silence = contact.silence() if contact is not None else None
        if contact is not None and silence is not None:
            late = lag.lately() if lag is not None else 0.0
            checks["kafka"] = kafka_silence(silence, late, contact.silent_after)
        elif contact is not None and contact.missing:
            topics = "topic" if len(contact.missing) == 1 else "topics"
            checks["kafka"] = f"{topics} {', '.join(contact.missing)} missing"
        # With PostgreSQL or Kafka away, nothing moves and the samples are not live: that
        # one is said alone.
        if checks["database"] == "ok" and silence is None:
            consumer: Stalls | None = getattr(state, "consumer_stalls", None)
            outbox: Stalls | None = getattr(state, "outbox_stalls", None)
            if consumer is not None:
                checks["consumer"] = consumer_said(consumer, settings.consumer_stall_seconds)
            if outbox is not None:
                checks["relay"] = relay_said(outbox, settings.outbox_stall_seconds)
            stalled = [name for name in ("consumer", "relay") if checks[name] != "ok"]
            # A handler waiting for a lock logs nothing: say who holds it, beside the stall.
            if stalled and (waits := await db.lock_waits(HEALTH_DB_WITHIN)) is not None:
                for name in stalled:
                    checks[name] = f"{checks[name]}; {waits}"
        down = [name for name, said in checks.items() if said != "ok"]
        detail = "; ".join(f"{name}: {checks[name]}" for name in down)
        if not reachable and passing:  # away: restarting, unreachable for now
            return unavailable("Unhealthy", detail, down=down, checks=checks)
        if not reachable:  # a login refused, a database missing: not to be waited out
            return problem(503, "Unhealthy", detail, down=down, checks=checks)
        if down:
            return {"status": "degraded", "down": down, "detail": detail, "checks": checks}
        return {"status": "ok", "checks": checks}

    # HEAD apart, out of the OpenAPI document: one operation with two methods is two
    # operations of the same id there.
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        dependencies=[require("metrics", "ops")],
        responses=problem_responses(),
    )
    async def metrics(request: Request) -> Response:
        # The pool's use, read as the scrape asks: the figures sampled every 5 s are read on a
        # connection of this pool, which waited for one with them all in use.
        in_use, idle = db.pool_use()
        DB_POOL_CONNECTIONS.labels(service, "in_use").set(in_use)
        DB_POOL_CONNECTIONS.labels(service, "idle").set(idle)
        DB_POOL_CAPACITY.labels(service).set(db.pool_capacity)
        lag: LoopLag | None = getattr(request.app.state, "loop_lag", None)
        if lag is not None:  # a service serving (shared.runtime), whose loop it watches
            EVENT_LOOP_LAG.labels(service).set(lag.lately())
        return Response(exposition(service), media_type=CONTENT_TYPE_LATEST)

    return app

"""The storefront HTTP API of the orders service (see CONTRACT.md, HTTP).

Every answer other than a success is ``application/problem+json``; the OpenAPI document
(``/openapi.json``, ``/docs``) lists each status code an operation may answer.
"""

from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse

from services.orders import handlers
from services.orders.adapters.tables import IDEMPOTENCY_KEY
from services.orders.domain.order import OrderAlreadyConfirmed, Status
from services.orders.entrypoints import queries
from services.orders.entrypoints.schemas import (
    Accepted,
    CancelAnswer,
    CancelBody,
    OrderBody,
    OrderPage,
    OrderView,
    Problem,
)
from shared.api import ORDER_CONFIRMED
from shared.auth.tokens import Principal
from shared.events.ignored import ignored_fields
from shared.events.orders import HTTP_SOURCE, ORDER_REF_PATTERN, CancelReason, OrderRequested
from shared.http import (
    BAD_INPUT,
    NO_NUL,
    UNTIL_NOT_AFTER_SINCE,
    Time,
    problem,
    problem_responses,
    refused_body,
    refused_period,
    require,
    scope_refused,
)
from shared.http import create_app as create_base_app
from shared.ids import as_stored
from shared.messaging.uow import UnitOfWork
from shared.pagination import Limit, Position, cursor_after
from shared.settings import Settings

NOT_FOUND = "no order with this id (or none the token reaches: one bound to its own orders)"
KEY_TAKEN = (
    "an order with this Idempotency-Key is not this token's: another client's (every client"
    " of POST /orders shares one space of keys), or placed before this Caravan kept who"
    " placed each order, maybe by you. Yours: it stands, do not place it again;"
    " ask the centre's operations. Not yours: make your keys your own (e.g. prefixed with"
    " your shop's name, shawan:SWN-000123; the key is the order's ref, in buyers' texts)"
)
"""What a bound token is told of a key an order it does not reach was placed with (a 409):
nothing of that order, the same words whether another client placed it or it was placed
before ``placed_by`` was kept (a failure drill's storefront, bound after the upgrade, was
told to send its own order of before the upgrade again under a new key)."""
EVERY_BUYER = (
    ", which every buyer's orders need: a token without it names a buyer (`buyer_id`), or both"
    " `source` and `order_ref`"
)
"""What a token without ops is told of ``GET /orders`` naming no one buyer (a 403). A detail
writes a query parameter it names in backticks, the word in plain text (a client, the CLI,
says the parameter in its own terms: ``caravan.admin_api.as_options``)."""


def its_sources(who: Principal) -> str:
    """What a token bound to sources may list without a buyer besides (added to
    :data:`EVERY_BUYER`): every order of one of its sources, which are all its own (a
    platform's drill had no way to ask which of its orders were still pending but one order
    at a time)."""
    if not who.sources:
        return ""
    return f", or one of its sources (`source`: {', '.join(sorted(who.sources))})"


ORDERS_CURSOR = cursor_after(datetime, str)  # after an order's (placed_at, order_id)


class PlacingFailed(Exception):
    """Placing an order violated a key other than its (source, order_ref): a bug, answered 500
    and logged with its traceback, not the 409 of a race lost at commit."""


def _not_found(order_id: str) -> Any:
    return problem(404, "Order not found", f"no order {order_id!r}")


def create_app(uow: UnitOfWork, deadline: timedelta, settings: Settings) -> FastAPI:
    kafka_servers = settings.kafka_bootstrap_servers
    app = create_base_app("orders", uow.db, settings)
    app.description = "The storefront API of Caravan: place, follow, list and cancel orders."

    @app.post(
        "/orders",
        status_code=202,
        response_model=Accepted,
        tags=["orders"],
        responses=problem_responses(
            {
                409: "this Idempotency-Key was used for a different body; or, to a token"
                " bound to its own orders, by another client (nothing of its order said)",
                422: f"{BAD_INPUT} (or is not JSON in UTF-8), or the body's order_ref differs"
                " from the Idempotency-Key",
            },
            model=Problem,
            writes=True,
        ),
    )
    async def place(
        request: Request,
        body: OrderBody,
        idempotency_key: Annotated[str, Header(pattern=ORDER_REF_PATTERN)],
        who: Annotated[Principal, require("orders:write")],
    ) -> Any:
        """Place an order (``source`` ``http``); the same key and body again is the same order.
        The order keeps the name of the token that placed it: a token bound to its own orders
        is refused a key another token used (409), told nothing of that order. The 202 names
        what the body held that was ignored (``ignored``): unknown fields are not refused."""
        if body.order_ref is not None and body.order_ref != idempotency_key:
            return problem(
                422,
                "Invalid request",
                "order_ref differs from the Idempotency-Key header",
                errors=[{"field": "order_ref", "message": "must equal the Idempotency-Key"}],
            )
        order = OrderRequested.model_validate({**body.model_dump(), "order_ref": idempotency_key})
        try:
            async with uow.begin() as tx:
                placed = await handlers.place_order(tx, order, HTTP_SOURCE, deadline, who.placer)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != IDEMPOTENCY_KEY:
                # No other key of an order being placed is another request's to take first: a
                # bug, not a race (a 409 would have the client send it again, for ever).
                raise PlacingFailed(f"placing an order violated {exc.constraint_name}") from exc
            # A concurrent request with this key committed its order first (the insert is
            # written at commit); placing again finds that order.
            async with uow.begin() as tx:
                placed = await handlers.place_order(tx, order, HTTP_SOURCE, deadline, who.placer)
        if who.sources is not None and placed.placed_by != who.placer:
            return problem(409, "Idempotency-Key taken", KEY_TAKEN)
        if not placed.same_request:
            return problem(
                409,
                "Idempotency-Key reused",
                "this key was used for a different order",
                order_id=placed.order_id,
            )
        # The body as FastAPI read it (Starlette keeps it): the fields OrderBody was given.
        ignored = ignored_fields(await request.json(), body)
        if ignored.fields:
            said = f"POST /orders {idempotency_key} of {who.placer}"
            handlers.tell_ignored(said, who.placer, ignored)
        answer = {"order_id": placed.order_id, "status": placed.status, "ignored": ignored.fields}
        return Accepted.model_validate(answer)

    @app.get(
        "/orders",
        response_model=OrderPage,
        tags=["orders"],
        responses=problem_responses(
            {
                403: "the token lacks the scope orders:read or ops, or ops where neither"
                " buyer_id nor both source and order_ref nor a source the token is bound to"
                " are given (every buyer's orders)",
                422: f"{BAD_INPUT}, the cursor is not one this API gave, a reason is asked of"
                f" orders not cancelled, or {UNTIL_NOT_AFTER_SINCE}",
            },
            model=Problem,
        ),
    )
    async def list_orders(
        request: Request,
        who: Annotated[Principal, require("orders:read", "ops")],
        buyer_id: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                description="the buyer's orders; may be left out when source and order_ref"
                " are both given (a platform knows its own order's reference, not our buyer"
                " id), or source is one the token is bound to (its orders), or by a token with"
                " the scope ops (every buyer's orders)",
            ),
            NO_NUL,
        ] = None,
        status: Status | None = None,
        reason: Annotated[
            CancelReason | None,
            Query(description="only orders cancelled for this reason (status cancelled)"),
        ] = None,
        source: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=256,
                description="only orders of this source (`http`, a storefront's); none: any",
            ),
            NO_NUL,
        ] = None,
        order_ref: Annotated[
            str | None,
            Query(
                pattern=ORDER_REF_PATTERN,
                description="only the orders of this order_ref (one per source)",
            ),
        ] = None,
        sku: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                description="only orders with a line of this product (its SKU)",
            ),
            NO_NUL,
        ] = None,
        seller: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                description="only orders holding this seller's goods (its id in the seed): as"
                " their stock.reserved named them, so none never reserved (cancelled"
                " unknown_sku, out_of_stock, out_of_season) nor reserved before 2026-12-07",
            ),
            NO_NUL,
        ] = None,
        since: Annotated[
            Time | None, Query(description="only orders placed at or after this time")
        ] = None,
        until: Annotated[Time | None, Query(description="only orders placed before this time")] = (
            None
        ),
        start: Position | None = ORDERS_CURSOR,
        limit: Limit = 20,
    ) -> Any:
        """A buyer's orders, newest first, optionally of one status (and reason), one source, one
        order_ref (a storefront finds the order it published by its own reference), one product
        (``sku``), one seller's goods (``seller``) and a time placed; follow ``next_cursor``.
        Without a buyer, the order of one source and order_ref (at most one: a platform's order,
        ``source`` ``platform/APP``, found by the platform's id); or, for a token with the scope
        ops, every buyer's orders so narrowed (an operator's "today's out_of_stock cancellations"),
        and for a token bound to a source, that source's (a platform's "which of my orders are still
        pending"). A token bound to its own orders is shown those alone
        (:func:`~services.orders.entrypoints.queries.reach`)."""
        of_its_own = who.sources is not None and source in who.sources  # all it reaches
        one_buyer = buyer_id is not None or (source is not None and order_ref is not None)
        if not (one_buyer or of_its_own or "ops" in who.scopes):
            raise scope_refused(request, who, ["ops"], EVERY_BUYER + its_sources(who))
        if reason is not None and status not in (None, "cancelled"):
            said = f"only cancelled orders have a reason, not {status} ones"
            return refused_body(said, field="query.reason")
        if (backwards := refused_period(since, until)) is not None:
            return backwards
        async with uow.db.engine.connect() as conn:
            items, next_cursor = await queries.buyer_orders(
                conn,
                buyer_id,
                start,
                limit,
                (since, until),
                queries.reach(who),
                status="cancelled" if reason is not None else status,
                reason=reason,
                source=source,
                order_ref=order_ref,
                sku=sku,
                seller=seller,
            )
        return OrderPage(items=items, next_cursor=next_cursor)

    @app.get(
        "/orders/{order_id}",
        response_model=OrderView,
        tags=["orders"],
        responses=problem_responses({404: NOT_FOUND, 422: BAD_INPUT}, model=Problem),
    )
    async def get_order(order_id: str, who: Annotated[Principal, require("orders:read")]) -> Any:
        """An order's status, total, reason and timeline; to a token bound to its own orders,
        one beyond them is as unknown (404)."""
        stored = as_stored(order_id)
        if stored is None:
            return _not_found(order_id)
        async with uow.db.engine.connect() as conn:
            view = await queries.order_view(conn, stored, queries.reach(who))
        return _not_found(order_id) if view is None else view

    @app.post(
        "/orders/{order_id}/cancel",
        response_model=CancelAnswer,
        tags=["orders"],
        responses=problem_responses(
            {404: NOT_FOUND, 409: "the order is already confirmed", 422: BAD_INPUT},
            model=Problem,
            writes=True,
        ),
    )
    async def cancel(
        order_id: str,
        who: Annotated[Principal, require("orders:write")],
        body: CancelBody | None = None,
    ) -> Any:
        """The buyer cancels (``cancelled_by_buyer``), or an operator of their own accord
        (body ``by``: ``operator``, ``cancelled_by_operator``); whatever was held or lent is
        given back.

        An order already cancelled stays as it is (its first reason holds) and is answered as
        it is, ``applied`` false; a confirmed one cannot be cancelled here. To a token bound to
        its own orders, one beyond them is as unknown (404), and stays as it is. A
        cancellation applied is in the audit trail (``order.cancel``) under the token's name,
        its detail who the caller said asked (``by``), the order's reason it ended with
        (``reason_code``) and the ``reason`` the body gives, if any (no body: none)."""
        stored = as_stored(order_id)
        if stored is None:
            return _not_found(order_id)
        order_id = stored  # as the database has it, in lower case
        within = queries.reach(who)
        if within is not None:  # whose order it is never changes: asked before, it holds
            async with uow.db.engine.connect() as conn:
                if not await queries.reaches(conn, order_id, within):
                    return _not_found(order_id)
        try:
            async with uow.begin() as tx:
                said = body or CancelBody()  # no body: the buyer's, no reason given
                done = await handlers.cancel_by(tx, order_id, said.by, who.name, said.reason)
        except OrderAlreadyConfirmed:
            return problem(
                409,
                ORDER_CONFIRMED,
                "a confirmed order cannot be cancelled",
                order_id=order_id,
            )
        if done is None:
            return _not_found(order_id)
        async with uow.db.engine.connect() as conn:
            view = await queries.order_view(conn, order_id, within)
        assert view is not None
        return CancelAnswer(**view.model_dump(), applied=done[1])

    @app.get("/asyncapi.json", tags=["documentation"])
    async def asyncapi_document() -> Any:
        """The AsyncAPI 3.0 document of every Kafka topic of Caravan."""
        from services.orders.asyncapi import asyncapi_json  # imports every service: lazily

        return asyncapi_json(kafka_servers)

    @app.get("/asyncapi", tags=["documentation"], response_class=HTMLResponse)
    async def asyncapi_page() -> HTMLResponse:
        """The AsyncAPI document, rendered."""
        from services.orders.asyncapi import asyncapi_html

        return HTMLResponse(asyncapi_html(kafka_servers))

    return app

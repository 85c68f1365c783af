"""The notifications service's own HTTP routes: delivery receipts from the gateway, the
opt-out list (``PUT``/``DELETE``/``GET /opt-outs/{phone}``) and the texts of an order or to a
phone (``GET /sms?order_id=&phone=&cursor=&limit=``, newest first, the number masked).

The gateway cannot hold a Caravan token: it calls back the receipts URL it was given, so that
URL carries a shared secret (``?key=``, compared in constant time; 401 without it). The
opt-outs need ``notifications:write`` (audited) or, to read, ``notifications:read``; the
texts ``notifications:read`` (or ``:write``) or ``ops``, whose operators answer buyers' calls.
"""

import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.notifications.adapters import queries
from services.notifications.adapters.gateway import SmsGateway
from services.notifications.adapters.tables import opt_outs
from services.notifications.dispatch import apply_receipt
from shared.auth import audit
from shared.auth.guard import AUTH_FAILURES
from shared.auth.tokens import Principal
from shared.http import BAD_INPUT, BEARER, problem, problem_responses, refused_body, require
from shared.messaging.uow import UnitOfWork
from shared.metrics import start_at_zero
from shared.pagination import Limit, Position, cursor_after, page
from shared.phones import E164

Writer = Annotated[Principal, require("notifications:write")]
Phone = Annotated[str, Path(max_length=16)]
NOT_E164 = f"{BAD_INPUT}, or the phone is not an E.164 number"
# PUT and DELETE. Neither declares the 409 of a race lost at commit (problem_responses'
# ``writes``), nor do the receipts: each writes by statements of its own (an insert that
# settles a conflict, a delete, an update) and its audit entry or events (a serial key).
OPT_OUT_PROBLEMS = problem_responses({422: NOT_E164})
RECEIPTS = {
    "description": "the gateway's delivery receipts, in its format: the simulator's"
    ' {"id", "status", "detail"} or a list of them, Infobip\'s {"results": [...]}',
    "required": True,
    "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
}
"""The body of ``POST /sms/receipts``, which the gateway adapter reads itself."""
TEXTS_READ = [require("notifications:read", "notifications:write", "ops")]
TEXT_CURSOR = cursor_after(datetime, str)  # after a text (created_at, sms_id)
NEITHER = "`order_id` or `phone` is needed: the texts of an order, or to a number"


def add_routes(app: FastAPI, uow: UnitOfWork, gateway: SmsGateway, receipts_secret: str) -> None:
    start_at_zero(AUTH_FAILURES, ["notifications"], ["receipts_secret"])

    @app.post(
        "/sms/receipts",
        tags=["sms"],
        openapi_extra={"requestBody": RECEIPTS},
        responses=problem_responses(
            {
                401: "the receipts URL's key is missing or wrong",
                404: "a receipt names a message not recorded yet (the gateway retries it)",
                422: f"{BAD_INPUT}, or the body is not the gateway's receipts",
            },
            token=False,
        ),
    )
    async def receipts(request: Request, key: Annotated[str, Query(max_length=256)] = "") -> Any:
        """Apply the gateway's delivery receipts. 401 without the receipts secret, 404 when one
        names a message not recorded yet (the gateway retries it), 422 when the body is not
        the gateway's format."""
        if not hmac.compare_digest(key.encode(), receipts_secret.encode()):
            guard = request.app.state.guard
            client = request.client.host if request.client else "unknown"
            guard.refused("receipts_secret", client, request.method, request.url.path)
            refused = problem(401, "Unauthorized", "the receipts URL's key is missing or wrong")
            refused.headers.update(BEARER)
            return refused
        try:
            parsed = gateway.parse_receipts(await request.body())
        except ValueError as exc:
            return refused_body(str(exc), "Not a delivery receipt")
        outcomes = []
        for receipt in parsed:
            async with uow.begin() as tx:
                outcomes.append(await apply_receipt(tx, receipt))
        if "unknown" in outcomes:
            return problem(404, "Unknown message", "a receipt names a message not recorded yet")
        return {"applied": outcomes.count("applied"), "duplicates": outcomes.count("duplicate")}

    def _check(phone: str) -> Response | None:
        if not E164.fullmatch(phone):
            return problem(422, "Invalid phone", f"{phone!r} is not an E.164 number")
        return None

    @app.put("/opt-outs/{phone}", status_code=204, tags=["sms"], responses=OPT_OUT_PROBLEMS)
    async def opt_out(phone: Phone, who: Writer) -> Response:
        """Stop every SMS to ``phone``, including those already queued."""
        if (bad := _check(phone)) is not None:
            return bad
        async with uow.begin() as tx:
            done = await tx.conn.execute(
                pg_insert(opt_outs).values(phone=phone).on_conflict_do_nothing()
            )
            if done.rowcount:
                await audit.record(
                    tx.conn,
                    who.name,
                    "sms.opt_out",
                    phone,
                    before={"opted_out": False},
                    after={"opted_out": True},
                )
        return Response(status_code=204)

    @app.delete("/opt-outs/{phone}", status_code=204, tags=["sms"], responses=OPT_OUT_PROBLEMS)
    async def opt_in(phone: Phone, who: Writer) -> Response:
        if (bad := _check(phone)) is not None:
            return bad
        async with uow.begin() as tx:
            done = await tx.conn.execute(delete(opt_outs).where(opt_outs.c.phone == phone))
            if done.rowcount:
                await audit.record(
                    tx.conn,
                    who.name,
                    "sms.opt_in",
                    phone,
                    before={"opted_out": True},
                    after={"opted_out": False},
                )
        return Response(status_code=204)

    @app.get(
        "/opt-outs/{phone}",
        tags=["sms"],
        dependencies=[require("notifications:read", "notifications:write")],
        responses=problem_responses({422: NOT_E164}),
    )
    async def is_opted_out(phone: Phone) -> Any:
        if (bad := _check(phone)) is not None:
            return bad
        async with uow.begin() as tx:
            count = await tx.conn.scalar(select(func.count()).where(opt_outs.c.phone == phone))
        return {"phone": phone, "opted_out": bool(count)}

    @app.get(
        "/sms",
        tags=["sms"],
        response_model=queries.Texts,
        dependencies=TEXTS_READ,
        responses=problem_responses({422: f"{BAD_INPUT}, or neither order_id nor phone given"}),
    )
    async def list_texts(
        order_id: Annotated[str | None, Query(max_length=36, description="an order's")] = None,
        phone: Annotated[
            str | None, Query(max_length=16, description="to this number (E.164)")
        ] = None,
        start: Position | None = TEXT_CURSOR,
        limit: Limit = 20,
    ) -> Any:
        """The texts of an order, or to a number (both: to it of the order), newest first:
        each one's recipient masked, template (``purpose``) and language, when it was queued,
        sent, delivered or is tried next, its status, attempts and last error (a failed one's
        reason); follow ``next_cursor``. Neither given is a 422."""
        if order_id is None and phone is None:
            return refused_body(NEITHER, field="query.order_id")
        if phone is not None and (bad := _check(phone)) is not None:
            return bad
        async with uow.db.engine.connect() as conn:
            found = await queries.texts(
                conn, order_id=order_id, phone=phone, start=start, limit=limit
            )
        items, next_cursor = page(found, limit, lambda t: (t.created_at, t.sms_id))
        return queries.Texts(items=items, next_cursor=next_cursor)

"""The notifications service's own HTTP routes: delivery receipts from the gateway, and the
opt-out list (``PUT``/``DELETE``/``GET /opt-outs/{phone}``)."""

from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.notifications.adapters.gateway import SmsGateway
from services.notifications.adapters.tables import opt_outs
from services.notifications.dispatch import apply_receipt
from services.notifications.domain.phones import E164
from shared.http import problem
from shared.messaging.uow import UnitOfWork


def add_routes(app: FastAPI, uow: UnitOfWork, gateway: SmsGateway) -> None:
    @app.post("/sms/receipts", tags=["sms"])
    async def receipts(request: Request) -> Any:
        """Apply the gateway's delivery receipts. 404 when one names a message not recorded
        yet (the gateway retries it), 422 when the body is not the gateway's format."""
        try:
            parsed = gateway.parse_receipts(await request.body())
        except ValueError as exc:
            return problem(422, "Not a delivery receipt", str(exc))
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

    @app.put("/opt-outs/{phone}", status_code=204, tags=["sms"])
    async def opt_out(phone: str) -> Response:
        """Stop every SMS to ``phone``, including those already queued."""
        if (bad := _check(phone)) is not None:
            return bad
        async with uow.begin() as tx:
            await tx.conn.execute(pg_insert(opt_outs).values(phone=phone).on_conflict_do_nothing())
        return Response(status_code=204)

    @app.delete("/opt-outs/{phone}", status_code=204, tags=["sms"])
    async def opt_in(phone: str) -> Response:
        if (bad := _check(phone)) is not None:
            return bad
        async with uow.begin() as tx:
            await tx.conn.execute(delete(opt_outs).where(opt_outs.c.phone == phone))
        return Response(status_code=204)

    @app.get("/opt-outs/{phone}", tags=["sms"])
    async def is_opted_out(phone: str) -> Any:
        if (bad := _check(phone)) is not None:
            return bad
        async with uow.begin() as tx:
            count = await tx.conn.scalar(select(func.count()).where(opt_outs.c.phone == phone))
        return {"phone": phone, "opted_out": bool(count)}

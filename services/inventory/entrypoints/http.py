"""The inventory admin API: receive and adjust lots, read stock per SKU and per lot, and the
spoilage report. Mounted on the service's shared app (``/healthz``, ``/metrics``, problems).

- ``GET /stock?cursor=&limit=&all=``, ``GET /stock/{sku}?all=``: counters per SKU over all
  its lots, with its lots but the finished ones (empty and past ``best_before``) unless
  ``all`` (404 unknown SKU); ``/stock`` a page of SKUs at a time (``next_cursor``).
- ``GET /lots/{lot_id}``: one lot's counters.
- ``POST /lots`` (a lot as in the seed file): 201 received, 200 the same lot again, 409 the
  id holds another lot, 422 unknown SKU or invalid body.
- ``POST /lots/{lot_id}/adjustments`` ``{"delta", "reason"}`` with an optional
  ``Idempotency-Key`` header: 201 applied, 200 the same key again (applied once), 409 more
  removed than available or the key reused for another adjustment.
- ``GET /reports/spoiled[?sku=&cursor=&limit=]``: spoiled and expired-unsold quantities per
  lot, a page of lots at a time (``next_cursor``), with the whole report's totals.

Writes need the scope ``inventory:write`` and are written to the audit trail; reads need
``inventory:read`` (or ``inventory:write``).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import Field

from services.inventory import handlers
from services.inventory.adapters import queries
from services.inventory.domain.ledger import StockError
from shared import days
from shared.auth import audit
from shared.auth.tokens import Principal
from shared.events.envelope import Frozen
from shared.http import BAD_INPUT, JSON_BODY, NO_NUL, problem, problem_responses, require
from shared.ids import new_id
from shared.messaging.uow import UnitOfWork
from shared.pagination import Limit, Position, cursor_after, page
from shared.seed import LotSeed


class Adjustment(Frozen):
    delta: int = Field(strict=True, ge=-1_000_000_000, le=1_000_000_000)
    reason: str = Field(min_length=1, max_length=256)


class Adjusted(Frozen):
    adjustment_id: str
    applied: bool
    lot: queries.LotStock


class StockList(Frozen):
    """A page of products' stock by SKU; ``next_cursor`` fetches the next (null on the last)."""

    skus: list[queries.SkuStock]
    next_cursor: str | None


Writer = Annotated[Principal, require("inventory:write")]
READ = [require("inventory:read", "inventory:write")]
Key = Annotated[str, Path(min_length=1, max_length=64), NO_NUL]
Finished = Annotated[
    bool, Query(alias="all", description="also the lots that are empty and past best_before")
]
UNKNOWN_SKU = "no product with this SKU"
UNKNOWN_LOT = "no lot with this id"
STOCK_CURSOR = cursor_after(str)  # after a product's sku
SPOILED_CURSOR = cursor_after(str, str)  # after a lot's (sku, lot_id)


def admin_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(tags=["inventory"], responses=problem_responses({422: BAD_INPUT}))
    engine = uow.db.engine

    @router.get("/stock", response_model=StockList, dependencies=READ)
    async def all_stock(
        start: Position | None = STOCK_CURSOR, limit: Limit = 100, finished: Finished = False
    ) -> Any:
        """Products' stock by SKU, a page at a time (``next_cursor``)."""
        async with engine.connect() as conn:
            found = await queries.stock(
                conn, days.today(), start=start, limit=limit + 1, finished=finished
            )
        skus, next_cursor = page(found, limit, lambda s: (s.sku,))
        return StockList(skus=skus, next_cursor=next_cursor)

    @router.get(
        "/stock/{sku:path}",
        response_model=queries.SkuStock,
        dependencies=READ,
        responses=problem_responses({404: UNKNOWN_SKU}),
    )
    async def sku_stock(sku: Key, finished: Finished = False) -> Any:
        async with engine.connect() as conn:
            found = await queries.stock(conn, days.today(), sku, finished=finished)
        return found[0] if found else problem(404, "Unknown SKU", f"no product {sku}")

    @router.get(
        "/lots/{lot_id:path}",
        response_model=queries.LotStock,
        dependencies=READ,
        responses=problem_responses({404: UNKNOWN_LOT}),
    )
    async def lot(lot_id: Key) -> Any:
        async with engine.connect() as conn:
            found = await queries.lot_stock(conn, lot_id, days.today())
        return found or problem(404, "Unknown lot", f"no lot {lot_id}")

    @router.post(
        "/lots",
        status_code=201,
        response_model=queries.LotStock,
        responses={
            200: {"description": "the same lot again: nothing changed", "model": queries.LotStock},
            **problem_responses(
                {
                    **JSON_BODY,
                    409: "the lot id holds another lot",
                    422: f"{BAD_INPUT}, or no product has the lot's SKU",
                }
            ),
        },
    )
    async def add_lot(body: LotSeed, response: Response, who: Writer) -> Any:
        try:
            async with uow.begin() as tx:
                created = await handlers.add_lot(tx, body)
                view = await queries.lot_stock(tx.conn, body.lot_id, days.today())
                if created and view is not None:
                    after = view.model_dump(mode="json")
                    await audit.record(tx.conn, who.name, "lot.add", body.lot_id, after=after)
        except handlers.UnknownSku:
            return problem(422, "Unknown SKU", f"no product {body.sku}")
        except handlers.Conflict as exc:
            return problem(409, "Lot exists", str(exc))
        if not created:
            response.status_code = 200
        return view

    @router.post(
        "/lots/{lot_id:path}/adjustments",
        status_code=201,
        response_model=Adjusted,
        responses={
            200: {"description": "the same Idempotency-Key again: applied once", "model": Adjusted},
            **problem_responses(
                {
                    **JSON_BODY,
                    404: UNKNOWN_LOT,
                    409: "more removed than the lot holds, or the key was used for another"
                    " adjustment",
                    422: f"{BAD_INPUT}, or delta is 0",
                }
            ),
        },
    )
    async def adjust(
        lot_id: Key,
        body: Adjustment,
        response: Response,
        who: Writer,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=64)] = None,
    ) -> Any:
        if body.delta == 0:
            return problem(422, "Invalid request", "delta must not be 0")
        key = idempotency_key or new_id()
        try:
            async with uow.begin() as tx:
                await handlers.lock_lot(tx, lot_id)  # before, as the change finds it
                before = await queries.lot_stock(tx.conn, lot_id, days.today())
                applied = await handlers.adjust_lot(tx, lot_id, body.delta, body.reason, key)
                await tx.flush()  # the lot's new counters, read back just below
                view = await queries.lot_stock(tx.conn, lot_id, days.today())
                if applied and before is not None and view is not None:
                    await audit.record(
                        tx.conn,
                        who.name,
                        "lot.adjust",
                        lot_id,
                        before=before.model_dump(mode="json"),
                        after=view.model_dump(mode="json"),
                        detail={"delta": body.delta, "reason": body.reason, "key": key},
                    )
        except handlers.UnknownLot:
            return problem(404, "Unknown lot", f"no lot {lot_id}")
        except (handlers.Conflict, StockError) as exc:
            return problem(409, "Adjustment refused", str(exc))
        assert view is not None
        if not applied:
            response.status_code = 200
        return Adjusted(adjustment_id=key, applied=applied, lot=view)

    @router.get("/reports/spoiled", response_model=queries.SpoiledReport, dependencies=READ)
    async def spoiled(
        sku: Annotated[str | None, Query(max_length=64)] = None,
        start: Position | None = SPOILED_CURSOR,
        limit: Limit = 100,
    ) -> Any:
        """Spoiled lots by SKU and lot id, a page at a time (``next_cursor``); the totals
        are the whole report's."""
        async with engine.connect() as conn:
            report = await queries.spoiled_report(
                conn, days.today(), sku, start=start, limit=limit + 1
            )
        lots, next_cursor = page(report.lots, limit, lambda x: (x.sku, x.lot_id))
        return report.model_copy(update={"lots": lots, "next_cursor": next_cursor})

    return router

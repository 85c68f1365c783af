"""The inventory admin API: receive and adjust lots, read stock per SKU and per lot, and the
spoilage report. Mounted on the service's shared app (``/healthz``, ``/metrics``, problems).

- ``GET /stock?seller=&cursor=&limit=&all=``, ``GET /stock/{sku}?all=``: counters per SKU
  over all its lots, with its lots but the finished ones (empty and past ``best_before``)
  unless ``all`` (404 unknown SKU); ``/stock`` a page of SKUs at a time (``next_cursor``),
  of one seller's products with ``seller`` (404 unknown seller).
- ``GET /sellers?q=&cursor=&limit=``: the sellers (the seed's), a page at a time in id order
  (``next_cursor``), each with its name, county, phone masked and count of SKUs; with ``q``
  those whose id or name holds it (any case).
- ``GET /lots/{lot_id}``: one lot's counters.
- ``GET /lots/{lot_id}/adjustments?cursor=&limit=``: the lot's counters and a page of its
  history, oldest first: adjustments (delta), corrections (the terms before and after) and
  its selling stopped or restarted (on_sale), each with its reason, time and author.
- ``GET /lots/{lot_id}/holds?cursor=&limit=``: the lot's counters, a page of the orders
  holding units of it now, the oldest hold first (each order's id, units, ``held_at`` and
  ``held_until``), and the totals of every page (``orders``, ``held``: the lot's
  ``reserved``); 404 unknown lot.
- ``PUT /lots/{lot_id}/selling`` ``{"on_sale", "reason"}``: stop a lot selling (false: no
  new order holds any of it, those that do are sold or released as before) or restart it;
  200 (``changed`` false: it was so already), 404 unknown lot.
- ``PATCH /lots/{lot_id}`` ``{"sku", "available_from", "best_before", "reason"}`` (the terms
  to set right, at least one): 200 (``corrected`` false: it had them), 404 unknown lot, 409
  while orders hold any of it (stop it selling first, and they drain) or (of its SKU) once
  any of it was sold, 422 unknown SKU or dates out of order.
- ``POST /lots`` (a lot as in the seed file): 201 received, 200 the same lot again (or on
  terms it had before a correction: left as corrected, as ``caravan seed`` does), 409 the
  id holds another lot, 422 unknown SKU or invalid body.
- ``POST /lots/{lot_id}/adjustments`` ``{"delta", "reason", "spoiled"}`` with an optional
  ``Idempotency-Key`` header: 201 applied, 200 the same key again (applied once), 409 more
  removed than available or the key reused for another adjustment. ``spoiled`` (a negative
  ``delta``): the units are written off as spoiled, ``received`` unchanged.
- ``GET /reports/spoiled[?sku=&cursor=&limit=]``: spoiled and expired-unsold quantities per
  lot, a page of lots at a time (``next_cursor``), with the whole report's totals.

Writes need the scope ``inventory:write`` and are written to the audit trail; reads need
``inventory:read`` (or ``inventory:write``).
"""

from datetime import datetime
from typing import Annotated, Any, Self

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import ConfigDict, Field, model_validator

from services.inventory import handlers
from services.inventory.adapters import queries
from services.inventory.domain.ledger import StockError
from shared import days
from shared.auth import audit
from shared.auth.tokens import Principal
from shared.events.envelope import Frozen, NoNul
from shared.http import BAD_INPUT, NO_NUL, problem, problem_responses, require
from shared.ids import new_id
from shared.messaging.uow import UnitOfWork
from shared.pagination import Limit, Position, cursor_after, page
from shared.seed import Day, LotSeed


class Adjustment(Frozen):
    """``delta`` units found (+) or lost (-); ``spoiled``: lost to spoilage, written off as
    spoiled (from available to spoiled, ``received`` unchanged; ``delta`` negative)."""

    delta: int = Field(strict=True, ge=-1_000_000_000, le=1_000_000_000)
    reason: str = Field(min_length=1, max_length=256)
    spoiled: bool = Field(False, strict=True)


class Adjusted(Frozen):
    adjustment_id: str
    applied: bool
    lot: queries.LotStock


class Correction(NoNul):
    """A lot's terms mistyped when it was received, set right: those given (at least one)."""

    model_config = ConfigDict(extra="forbid")  # a term misspelt would be left as it is

    sku: str | None = Field(None, min_length=1, max_length=64)
    available_from: Day | None = None
    best_before: Day | None = None
    reason: str = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.sku is None and self.available_from is None and self.best_before is None:
            raise ValueError("give sku, available_from or best_before")
        return self


class Corrected(Frozen):
    """``corrected``: whether it changed anything; ``before``/``after``: the terms it did."""

    corrected: bool
    before: dict[str, str]
    after: dict[str, str]
    lot: queries.LotStock


class Selling(Frozen):
    """Whether the lot is to sell: false stops it (no new holds), true restarts it."""

    on_sale: bool = Field(strict=True)
    reason: str = Field(min_length=1, max_length=256)


class SellingSet(Frozen):
    """``changed``: false if the lot was so already."""

    changed: bool
    lot: queries.LotStock


class SellerList(Frozen):
    """A page of sellers; ``next_cursor`` fetches the next (null on the last)."""

    sellers: list[queries.Seller]
    next_cursor: str | None


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
UNKNOWN_SELLER = "no seller with this id"
UNKNOWN_LOT = "no lot with this id"
STOCK_CURSOR = cursor_after(str)  # after a product's sku
SELLER_CURSOR = cursor_after(str)  # after a seller's id
SPOILED_CURSOR = cursor_after(str, str)  # after a lot's (sku, lot_id)
ENTRY_CURSOR = cursor_after(datetime, str, str)  # after a lot's entry (at, kind, id)
HOLD_CURSOR = cursor_after(datetime, str)  # after a hold (held_at, order_id)


def _terms(changed: handlers.LotTerms) -> dict[str, dict[str, str]]:
    """A correction's terms it changed, as they were (``before``) and are (``after``)."""
    return {
        side: {name: str(pair[i]) for name, pair in changed.items()}
        for i, side in enumerate(("before", "after"))
    }


def admin_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(tags=["inventory"], responses=problem_responses({422: BAD_INPUT}))
    engine = uow.db.engine

    @router.get(
        "/stock",
        response_model=StockList,
        dependencies=READ,
        responses=problem_responses({404: UNKNOWN_SELLER}),
    )
    async def all_stock(
        seller: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                description="only this seller's products (a seed's seller id); none: every one",
            ),
            NO_NUL,
        ] = None,
        start: Position | None = STOCK_CURSOR,
        limit: Limit = 100,
        finished: Finished = False,
    ) -> Any:
        """Products' stock by SKU, of one seller's products or every one, a page at a time
        (``next_cursor``)."""
        async with engine.connect() as conn:
            if seller is not None and not await queries.seller_known(conn, seller):
                return problem(404, "Unknown seller", f"no seller {seller}")
            found = await queries.stock(
                conn, days.today(), start=start, limit=limit + 1, finished=finished, seller=seller
            )
        skus, next_cursor = page(found, limit, lambda s: (s.sku,))
        return StockList(skus=skus, next_cursor=next_cursor)

    @router.get("/sellers", response_model=SellerList, dependencies=READ)
    async def seller_list(
        q: Annotated[
            str | None,
            Query(
                min_length=1, max_length=256, description="only sellers whose id or name holds it"
            ),
            NO_NUL,
        ] = None,
        start: Position | None = SELLER_CURSOR,
        limit: Limit = 100,
    ) -> Any:
        """The sellers, each with its name, county, phone (masked) and count of SKUs, in id
        order a page at a time (``next_cursor``)."""
        async with engine.connect() as conn:
            found = await queries.seller_list(conn, q, start, limit + 1)
        listed, next_cursor = page(found, limit, lambda s: (s.seller_id,))
        return SellerList(sellers=listed, next_cursor=next_cursor)

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

    @router.get(  # before /lots/{lot_id:path}, which would take "L/adjustments" as an id
        "/lots/{lot_id:path}/adjustments",
        response_model=queries.LotHistory,
        dependencies=READ,
        responses=problem_responses({404: UNKNOWN_LOT}),
    )
    async def lot_history(
        lot_id: Key, start: Position | None = ENTRY_CURSOR, limit: Limit = 100
    ) -> Any:
        """The lot's counters and its adjustments and corrections, oldest first, a page at
        a time (``next_cursor``)."""
        async with engine.connect() as conn:
            found = await queries.lot_stock(conn, lot_id, days.today())
            if found is None:
                return problem(404, "Unknown lot", f"no lot {lot_id}")
            entries = await queries.lot_entries(conn, lot_id, start=start, limit=limit + 1)
        listed, next_cursor = page(entries, limit, lambda e: (e.at, e.kind, e.id))
        return queries.LotHistory(lot=found, entries=listed, next_cursor=next_cursor)

    @router.get(  # before /lots/{lot_id:path}, which would take "L/holds" as an id
        "/lots/{lot_id:path}/holds",
        response_model=queries.LotHolds,
        dependencies=READ,
        responses=problem_responses({404: UNKNOWN_LOT}),
    )
    async def lot_holds(
        lot_id: Key, start: Position | None = HOLD_CURSOR, limit: Limit = 100
    ) -> Any:
        """The lot's counters and the orders holding units of it now, the oldest hold first,
        a page at a time (``next_cursor``); the totals are of every page."""
        async with engine.connect() as conn:
            found = await queries.lot_stock(conn, lot_id, days.today())
            if found is None:
                return problem(404, "Unknown lot", f"no lot {lot_id}")
            holds, totals = await queries.lot_holds(conn, lot_id, start=start, limit=limit + 1)
        listed, next_cursor = page(holds, limit, lambda h: (h.held_at, h.order_id))
        return queries.LotHolds(lot=found, items=listed, next_cursor=next_cursor, totals=totals)

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
            200: {
                "description": "the same lot again, or on terms it had before a correction"
                " (left as corrected): nothing changed",
                "model": queries.LotStock,
            },
            **problem_responses(
                {
                    409: "the lot id holds another lot",
                    422: f"{BAD_INPUT}, or no product has the lot's SKU",
                },
                writes=True,
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

    @router.put(  # before PATCH /lots/{lot_id:path}, which would take "L/selling" as an id
        "/lots/{lot_id:path}/selling",
        response_model=SellingSet,
        responses=problem_responses({404: UNKNOWN_LOT}, writes=True),
    )
    async def set_selling(lot_id: Key, body: Selling, who: Writer) -> Any:
        """Stop a lot selling (its holds drain: sold or released as before) or restart it."""
        action = "lot.restart_selling" if body.on_sale else "lot.stop_selling"
        try:
            async with uow.begin() as tx:
                changed, view = await handlers.change_lot(
                    tx,
                    lot_id,
                    who.name,
                    action,
                    lambda: handlers.set_selling(tx, lot_id, body.on_sale, body.reason, who.name),
                    lambda _: {"reason": body.reason},
                )
        except handlers.UnknownLot:
            return problem(404, "Unknown lot", f"no lot {lot_id}")
        return SellingSet(changed=changed, lot=view)

    @router.patch(
        "/lots/{lot_id:path}",
        response_model=Corrected,
        responses=problem_responses(
            {
                404: UNKNOWN_LOT,
                409: "orders hold some of the lot (stop it selling, PUT"
                " /lots/{lot_id}/selling, and they drain), or (a new SKU) some of it was sold",
                422: f"{BAD_INPUT}, no product has the SKU, or the dates are out of order",
            },
            writes=True,
        ),
    )
    async def correct_lot(lot_id: Key, body: Correction, who: Writer) -> Any:
        """Set right a lot's SKU or dates, mistyped when it was received."""
        try:
            async with uow.begin() as tx:
                changed, view = await handlers.change_lot(
                    tx,
                    lot_id,
                    who.name,
                    "lot.correct",
                    lambda: handlers.correct_lot(
                        tx,
                        lot_id,
                        body.reason,
                        who.name,
                        sku=body.sku,
                        available_from=body.available_from,
                        best_before=body.best_before,
                    ),
                    lambda changed: {"reason": body.reason, **_terms(changed)},
                )
        except handlers.UnknownLot:
            return problem(404, "Unknown lot", f"no lot {lot_id}")
        except handlers.UnknownSku:
            return problem(422, "Unknown SKU", f"no product {body.sku}")
        except handlers.DatesOutOfOrder as exc:
            return problem(422, "Invalid request", str(exc))
        except handlers.Refused as exc:
            return problem(409, "Correction refused", str(exc))
        return Corrected(corrected=bool(changed), lot=view, **_terms(changed))

    @router.post(
        "/lots/{lot_id:path}/adjustments",
        status_code=201,
        response_model=Adjusted,
        responses={
            200: {"description": "the same Idempotency-Key again: applied once", "model": Adjusted},
            **problem_responses(
                {
                    404: UNKNOWN_LOT,
                    409: "more removed than the lot holds, more added than a lot can hold"
                    " (2147483647 units), or the key was used for another adjustment",
                    422: f"{BAD_INPUT}, delta is 0, or positive with spoiled",
                },
                writes=True,
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
        if body.spoiled and body.delta > 0:
            return problem(422, "Invalid request", "spoiled units are written off: `delta` < 0")
        key = idempotency_key or new_id()
        try:
            async with uow.begin() as tx:
                applied, view = await handlers.change_lot(
                    tx,
                    lot_id,
                    who.name,
                    "lot.adjust",
                    lambda: handlers.adjust_lot(
                        tx, lot_id, body.delta, body.reason, key, who.name, body.spoiled
                    ),
                    lambda _: {**body.model_dump(), "key": key},
                )
        except handlers.UnknownLot:
            return problem(404, "Unknown lot", f"no lot {lot_id}")
        except (handlers.Conflict, StockError) as exc:
            return problem(409, "Adjustment refused", str(exc))
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

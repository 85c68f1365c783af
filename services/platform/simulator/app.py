"""The platform simulator's HTTP API.

Platform side (what the adapter calls; every request must be signed with the app's secret
and carry a fresh ``timestamp``, else 401):

- ``GET /orders/{order_id}?app_key=&timestamp=&sign=``: the order (404 if unknown).
- ``POST /status`` (JSON ``{app_key, order_id, caravan_order_id, status, reason,
  idempotency_key, timestamp, sign}``, verified over every field it carries): records an
  order outcome; the first request of an idempotency key is applied, later ones are answered
  the same and counted.

Control side (for tests and ``caravan demo``):

- ``POST /orders`` ``{order_id, status, buyer: {id, phone}, items: [{sku, quantity}],
  delivery}``: creates or replaces an order; ``status`` is ``wait_pay``, ``paid``,
  ``cancelled`` or any other a platform moves an order on to (``shipped``, ``finished``...).
- ``POST /orders/{order_id}/answers`` ``{statuses}``: the order API answers the order's next
  fetches with these statuses, one a fetch, then with its own again (a platform whose order
  moves on between two pushes' fetches).
- ``POST /orders/{order_id}/push`` ``{kind: "full" | "notice", form, timestamp_offset_seconds,
  bad_signature, push_id}`` (each optional; no body at all is ``{}``): signs a push and
  sends it to the adapter (a JSON body, or a form with ``form``); ``full`` carries the order
  as JSON in ``order``, ``notice`` only says the order changed. Answers ``{status_code,
  body, params}`` (the adapter's answer and exactly what was sent, so that a test can replay
  it); 502 ``{title, detail, url}`` where the adapter cannot be reached (no answer: its push
  URL and the error).
- ``PUT /down`` ``{"seconds": s, "apis": ["orders", "status"], "answer": 503}``: those APIs
  answer ``answer`` (503 unless said: a 4xx is a refusal for good) for ``s`` seconds (0: up
  again).
- ``PUT /trickle`` ``{"seconds": s, "every": e}``: for ``s`` seconds, the order API sends
  its answers a byte every ``e`` seconds (a platform holding a push: each read quick, the
  whole answer never done).
- ``PUT /slow`` ``{"seconds": s, "by": d}``: for ``s`` seconds, the order API holds each
  answer ``d`` seconds before sending it (a slow platform).
- ``GET /fetches?order_id=``: when the order API was asked for an order (each fetch, on
  arrival).
- ``GET /callbacks?order_id=``: the outcomes applied (one per idempotency key, with how
  many requests carried it) and every request. ``GET /healthz`` (never down).
"""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from services.platform.domain.orders import PlatformOrder
from services.platform.domain.signing import SignMethod, fresh, signed, verify

WINDOW_SECONDS = 300.0


class PushRequest(BaseModel):
    kind: Literal["full", "notice"] = "full"
    form: bool = False
    timestamp_offset_seconds: float = 0.0
    bad_signature: bool = False
    push_id: str | None = None


class Answers(BaseModel):
    statuses: list[str] = Field(min_length=1)


Api = Literal["orders", "status"]


class Trickle(BaseModel):
    seconds: float = Field(ge=0)
    every: float = Field(0.5, gt=0)


class Slow(BaseModel):
    seconds: float = Field(ge=0)
    by: float = Field(ge=0)


class Down(BaseModel):
    seconds: float = Field(ge=0)
    apis: list[Api] = ["orders", "status"]
    answer: int = Field(503, ge=400, le=599)


@dataclass
class State:
    orders: dict[str, PlatformOrder] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)  # statuses of next fetches
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> first update
    requests: list[dict[str, Any]] = field(default_factory=list)
    down_until: dict[str, float] = field(default_factory=dict)
    answers_down: dict[str, int] = field(default_factory=dict)  # api -> its answer meanwhile
    trickle_until: float = 0.0
    trickle_every: float = 0.5
    slow_until: float = 0.0
    slow_by: float = 0.0
    fetches: list[dict[str, Any]] = field(default_factory=list)

    def down(self, api: Api) -> bool:
        return time.monotonic() < self.down_until.get(api, 0.0)

    def unavailable(self, api: Api) -> JSONResponse:
        return JSONResponse({"title": "platform down"}, status_code=self.answers_down[api])


def create_app(app_key: str, secret: str, push_url: str, method: SignMethod) -> FastAPI:
    app = FastAPI(title="Caravan marketplace-platform simulator")
    state = State()

    def authentic(params: dict[str, str]) -> bool:
        return (
            params.get("app_key") == app_key
            and verify(params, secret, method)
            and fresh(params.get("timestamp"), datetime.now(UTC), WINDOW_SECONDS)
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str, request: Request) -> Any:
        state.fetches.append({"at": time.time(), "order_id": order_id})
        if time.monotonic() < state.slow_until:
            await asyncio.sleep(state.slow_by)
        if state.down("orders"):
            return state.unavailable("orders")
        if not authentic(dict(request.query_params)):
            return JSONResponse({"title": "bad signature"}, status_code=401)
        order = state.orders.get(order_id)
        if order is None:
            return JSONResponse({"title": "no such order"}, status_code=404)
        if state.answers.get(order_id):
            order = order.model_copy(update={"status": state.answers[order_id].pop(0)})
        if time.monotonic() < state.trickle_until:
            body, every = order.model_dump_json(exclude_none=True).encode(), state.trickle_every

            async def trickled() -> Any:
                for byte in body:
                    yield bytes([byte])
                    await asyncio.sleep(every)

            return StreamingResponse(trickled(), media_type="application/json")
        return order.model_dump(mode="json", exclude_none=True)

    @app.post("/status")
    async def status(request: Request) -> Any:
        if state.down("status"):
            state.requests.append({"at": time.time(), "answer": state.answers_down["status"]})
            return state.unavailable("status")
        try:
            params = {k: str(v) for k, v in dict(await request.json()).items()}
        except (ValueError, TypeError):
            return JSONResponse({"title": "not JSON"}, status_code=400)
        if not authentic(params):
            state.requests.append({"at": time.time(), "answer": 401, **params})
            return JSONResponse({"title": "bad signature"}, status_code=401)
        key = params.get("idempotency_key") or request.headers.get("idempotency-key", "")
        first = key not in state.applied
        if first:
            state.applied[key] = {
                "idempotency_key": key,
                "order_id": params.get("order_id"),
                "caravan_order_id": params.get("caravan_order_id"),
                "status": params.get("status"),
                "reason": params.get("reason") or None,
            }
        state.requests.append({"at": time.time(), "answer": 200, **params})
        return {"applied": first}

    @app.post("/orders")
    async def put_order(order: PlatformOrder) -> Any:
        state.orders[order.order_id] = order
        return order.model_dump(mode="json", exclude_none=True)

    @app.post("/orders/{order_id}/answers")
    async def answers(order_id: str, body: Answers) -> Any:
        if order_id not in state.orders:
            return JSONResponse({"title": "no such order"}, status_code=404)
        state.answers[order_id] = list(body.statuses)
        return body.model_dump()

    @app.post("/orders/{order_id}/push")
    async def push(order_id: str, body: PushRequest | None = None) -> Any:
        body = body or PushRequest()  # no body: a full JSON push, signed, stamped now
        order = state.orders.get(order_id)
        if order is None:
            return JSONResponse({"title": "no such order"}, status_code=404)
        stamp = datetime.now(UTC) + timedelta(seconds=body.timestamp_offset_seconds)
        params = {
            "app_key": app_key,
            "push_id": body.push_id or uuid.uuid4().hex,
            "timestamp": str(int(stamp.timestamp())),
            "order_id": order_id,
            "event": "order_created" if body.kind == "full" else "order_changed",
        }
        if body.kind == "full":
            params["order"] = json.dumps(order.model_dump(mode="json", exclude_none=True))
        params = signed(params, secret, method)
        if body.bad_signature:
            params["sign"] = signed(params, secret + "-wrong", method)["sign"]
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                if body.form:
                    answer = await client.post(push_url, data=params)
                else:
                    answer = await client.post(push_url, json=params)
        except httpx.TransportError as exc:  # the adapter down: said to the caller, no traceback
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            unreached = {"title": "the adapter cannot be reached", "detail": error, "url": push_url}
            return JSONResponse(unreached, status_code=502)
        try:
            content: Any = answer.json()
        except ValueError:
            content = answer.text
        return {"status_code": answer.status_code, "body": content, "params": params}

    @app.put("/down")
    async def down(body: Down) -> dict[str, Any]:
        for api in body.apis:
            state.down_until[api] = time.monotonic() + body.seconds
            state.answers_down[api] = body.answer
        return body.model_dump()

    @app.put("/trickle")
    async def trickle(body: Trickle) -> dict[str, Any]:
        state.trickle_until = time.monotonic() + body.seconds
        state.trickle_every = body.every
        return body.model_dump()

    @app.put("/slow")
    async def slow(body: Slow) -> dict[str, Any]:
        state.slow_until, state.slow_by = time.monotonic() + body.seconds, body.by
        return body.model_dump()

    @app.get("/fetches")
    async def fetches(order_id: str | None = None) -> list[dict[str, Any]]:
        return [f for f in state.fetches if order_id is None or f["order_id"] == order_id]

    @app.get("/callbacks")
    async def callbacks(order_id: str | None = None) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in state.requests:
            if r.get("answer") == 200:
                key = str(r.get("idempotency_key"))
                counts[key] = counts.get(key, 0) + 1
        return {
            "callbacks": [
                {**c, "requests": counts.get(k, 0)}
                for k, c in state.applied.items()
                if order_id is None or c["order_id"] == order_id
            ],
            "requests": [
                r for r in state.requests if order_id is None or r.get("order_id") == order_id
            ],
        }

    return app

"""The SMS gateway simulator: an HTTP SMS gateway that misbehaves on request.

``POST /sms`` ``{dedup_key, to, text, callback_url}`` accepts a message (``202 {"id"}``) and,
after ``receipt_delay`` seconds, posts a delivery receipt ``{id, dedup_key, status, detail}``
to ``callback_url`` (retried with backoff, for minutes, until the callback answers 2xx).
A message whose ``dedup_key`` was accepted before is not sent again: the answer is
``200 {"id": <the first id>, "duplicate": true}``.

Control, per recipient: ``POST /script {"to", "actions": [...], "receipt"}`` queues what the
next requests for ``to`` get, one action each: ``fail`` (500), ``reject`` (400, its error
quoting the number, as real gateways' refusals do), ``429`` or
``429:SECONDS`` (429 with ``Retry-After``), ``timeout`` or ``timeout:SECONDS`` (the message is
accepted but the answer comes that late, as when a response is lost), ``long_id`` (accepted
with an id of 200 characters: a gateway's ids are its own). ``receipt`` is
``delivered`` (default), ``failed`` or ``none``. ``POST /config {"rate_per_second",
"receipt_delay"}`` sets a global rate limit (429 beyond it) and the receipt delay.

Reports: ``GET /messages?to=`` (accepted messages, one per dedup key, with how many requests
carried that key), ``GET /requests?to=`` (every request, with its time and answer),
``GET /receipts?to=`` (receipts posted and the callback's answers).
"""

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class SmsIn(BaseModel):
    dedup_key: str
    to: str
    text: str
    callback_url: str | None = None


class Script(BaseModel):
    to: str
    actions: list[str] = []
    receipt: str = "delivered"


class Config(BaseModel):
    rate_per_second: float | None = None
    receipt_delay: float = 0.2


@dataclass
class State:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    actions: dict[str, deque[str]] = field(default_factory=dict)
    receipt_mode: dict[str, str] = field(default_factory=dict)
    config: Config = field(default_factory=Config)
    window: deque[float] = field(default_factory=deque)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def create_app() -> FastAPI:
    state = State()
    client = httpx.AsyncClient(timeout=2.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for task in list(state.tasks):
            task.cancel()
        await client.aclose()

    app = FastAPI(title="SMS gateway simulator", lifespan=lifespan)

    def _rate_limited(now: float) -> bool:
        limit = state.config.rate_per_second
        if limit is None:
            return False
        while state.window and state.window[0] <= now - 1.0:
            state.window.popleft()
        if len(state.window) >= limit:
            return True
        state.window.append(now)
        return False

    async def _post_receipt(message: dict[str, Any], url: str, status: str) -> None:
        await asyncio.sleep(state.config.receipt_delay)
        body = {"id": message["id"], "dedup_key": message["dedup_key"], "status": status}
        body["detail"] = "" if status == "delivered" else "handset unreachable"
        for attempt in range(40):  # about three minutes, as a provider retries callbacks
            entry = {"id": message["id"], "to": message["to"], "status": status}
            try:
                answer = await client.post(url, json=body)
                state.receipts.append({**entry, "answer": answer.status_code})
                if answer.is_success:
                    return
            except httpx.HTTPError as exc:
                state.receipts.append({**entry, "answer": repr(exc)})
            await asyncio.sleep(min(5.0, 0.25 * 2**attempt))

    def _accept(body: SmsIn, long_id: bool) -> tuple[dict[str, Any], bool]:
        known = state.messages.get(body.dedup_key)
        if known is not None:
            known["requests"] += 1
            return known, True
        message = {
            "id": f"sim-{'0' * 160 if long_id else ''}{uuid.uuid4()}",
            "dedup_key": body.dedup_key,
            "to": body.to,
            "text": body.text,
            "requests": 1,
            "accepted_at": time.time(),
        }
        state.messages[body.dedup_key] = message
        mode = state.receipt_mode.get(body.to, "delivered")
        if body.callback_url and mode != "none":
            task = asyncio.create_task(_post_receipt(message, body.callback_url, mode))
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)
        return message, False

    @app.post("/sms")
    async def send(body: SmsIn) -> JSONResponse:
        queued = state.actions.get(body.to)
        action = queued.popleft() if queued else "accept"
        if action == "accept" and _rate_limited(time.monotonic()):
            action = "429:1"
        state.requests.append(
            {"to": body.to, "dedup_key": body.dedup_key, "at": time.time(), "action": action}
        )
        name, _, arg = action.partition(":")
        if name == "fail":
            return JSONResponse({"error": "simulated failure"}, status_code=500)
        if name == "reject":
            return JSONResponse({"error": f"simulated refusal of {body.to}"}, status_code=400)
        if name == "429":
            return JSONResponse(
                {"error": "too many requests"},
                status_code=429,
                headers={"Retry-After": arg or "1"},
            )
        message, duplicate = _accept(body, long_id=name == "long_id")
        if name == "timeout":
            await asyncio.sleep(float(arg or "3"))
        return JSONResponse(
            {"id": message["id"], "duplicate": duplicate}, status_code=200 if duplicate else 202
        )

    @app.post("/script")
    async def script(body: Script) -> dict[str, Any]:
        state.actions.setdefault(body.to, deque()).extend(body.actions)
        state.receipt_mode[body.to] = body.receipt
        return {"to": body.to, "queued": list(state.actions[body.to])}

    @app.post("/config")
    async def config(body: Config) -> Config:
        state.config = body
        return body

    def _for(items: list[dict[str, Any]], to: str | None) -> list[dict[str, Any]]:
        return [i for i in items if to is None or i["to"] == to]

    @app.get("/messages")
    async def messages(to: str | None = None) -> list[dict[str, Any]]:
        return _for(list(state.messages.values()), to)

    @app.get("/requests")
    async def requests(to: str | None = None) -> list[dict[str, Any]]:
        return _for(state.requests, to)

    @app.get("/receipts")
    async def receipts(to: str | None = None) -> list[dict[str, Any]]:
        return _for(state.receipts, to)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app

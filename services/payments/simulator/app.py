"""The simulator's HTTP API.

Gateway side (what the payments service calls):

- ``POST /charges`` ``{"key", "amount_fen", "buyer_id"}``: idempotent by ``key``. The first
  request for a key decides its outcome (``approved``, with a new charge, or ``declined``);
  every later request for the key returns that same outcome and never makes another charge.
  A key that was voided is ``declined`` (``voided``).
- ``POST /charges/{key}/void``: voids the key's charge if any; later charges are refused.
  Answered 422 if its buyer's behaviour is ``settled`` (below), 404 if ``unknown``: nothing
  voided.

Control side (what tests and people use to make it misbehave):

- ``PUT /behaviour/{buyer_id}`` ``{"mode": "approve" | "decline" | "timeout" | "refuse" |
  "garble" | "long_id" | "settled" | "unknown", "times": n, "delay_seconds": s}``: the next
  ``n`` charge requests of that buyer are declined; or (``timeout``) *processed* and then
  answered only after ``delay_seconds``, later than the client waits, so the client sees a
  timeout although the charge was made; or (``refuse``) answered 400 with a problem body,
  nothing decided; or (``garble``) processed and answered with a page that is not JSON, as a
  proxy might; or (``long_id``) approved with a charge id of 99 characters (a gateway's ids
  are its own); or (``settled``: void requests, not charges) the next ``n`` voids of that
  buyer's keys are refused 422 with a problem body (the charge settled already), nothing
  voided; or (``unknown``: voids too) answered 404 with a problem body, no such charge, as a
  gateway answers for a key it has no charge under (or for one it lost), nothing voided.
  Then the buyer is approved again. ``DELETE /behaviour/{buyer_id}`` resets it.
- ``GET /charges?key=...``: the charges made (``voided`` marked) and how many charge and void
  requests each key received, for assertions. ``GET /healthz``.
"""

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field


class ChargeRequest(BaseModel):
    key: str = Field(min_length=1, max_length=128)
    amount_fen: int = Field(ge=0, strict=True)
    buyer_id: str = ""


VOID_MODES = frozenset({"settled", "unknown"})
"""Behaviours of a buyer's voids; the others are of their charges."""


class Behaviour(BaseModel):
    mode: Literal[
        "approve", "decline", "timeout", "refuse", "garble", "long_id", "settled", "unknown"
    ]
    times: int = Field(1, ge=1)
    delay_seconds: float = Field(5.0, ge=0)


@dataclass
class Charge:
    charge_id: str
    key: str
    amount_fen: int
    buyer_id: str
    voided: bool = False


@dataclass
class State:
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key → first answer
    charges: list[Charge] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    void_requests: dict[str, int] = field(default_factory=dict)
    buyers: dict[str, str] = field(default_factory=dict)  # key → the buyer it was charged for
    voided: set[str] = field(default_factory=set)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)

    def next_mode(self, buyer_id: str, void: bool = False) -> Behaviour | None:
        """The buyer's behaviour for this request (a void's, or a charge's), counted down."""
        rule = self.behaviours.get(buyer_id)
        if rule is None or rule.mode == "approve" or (rule.mode in VOID_MODES) != void:
            return None
        if rule.times <= 1:
            del self.behaviours[buyer_id]
        else:
            self.behaviours[buyer_id] = rule.model_copy(update={"times": rule.times - 1})
        return rule


def create_app() -> FastAPI:
    app = FastAPI(title="Caravan payment-gateway simulator")
    state = State()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/charges", response_model=None)
    async def charge(body: ChargeRequest) -> dict[str, Any] | Response:
        # No await before the outcome is stored: one key is decided exactly once.
        state.requests[body.key] = state.requests.get(body.key, 0) + 1
        state.buyers.setdefault(body.key, body.buyer_id)
        rule = state.next_mode(body.buyer_id)
        if rule is not None and rule.mode == "refuse":
            refusal = {"title": "charge refused", "detail": f"buyer {body.buyer_id} is barred"}
            return JSONResponse(refusal, status_code=400, media_type="application/problem+json")
        known = state.outcomes.get(body.key)
        if body.key in state.voided:
            outcome: dict[str, Any] = {"status": "declined", "charge_id": None, "reason": "voided"}
        elif known is not None:
            outcome = known
        elif rule is not None and rule.mode == "decline":
            outcome = {"status": "declined", "charge_id": None, "reason": "card"}
        else:
            long_id = rule is not None and rule.mode == "long_id"
            charge_id = f"ch_{'0' * 80 if long_id else ''}{uuid.uuid4().hex[:16]}"
            made = Charge(charge_id, body.key, body.amount_fen, body.buyer_id)
            state.charges.append(made)
            outcome = {"status": "approved", "charge_id": made.charge_id, "reason": None}
        state.outcomes.setdefault(body.key, outcome)
        if rule is not None and rule.mode == "timeout":
            await asyncio.sleep(rule.delay_seconds)
        if rule is not None and rule.mode == "garble":
            return HTMLResponse("<html><body>502 upstream hiccup</body></html>")
        return outcome

    @app.post("/charges/{key}/void", response_model=None)
    async def void(key: str) -> dict[str, Any] | Response:
        state.void_requests[key] = state.void_requests.get(key, 0) + 1
        buyer_id = state.buyers.get(key)
        rule = None if buyer_id is None else state.next_mode(buyer_id, void=True)
        if rule is not None and rule.mode == "unknown":
            unknown = {"title": "no such charge", "detail": f"no charge under {key}"}
            return JSONResponse(unknown, status_code=404, media_type="application/problem+json")
        if rule is not None:
            refusal = {"title": "void refused", "detail": f"the charge of {key} is settled"}
            return JSONResponse(refusal, status_code=422, media_type="application/problem+json")
        state.voided.add(key)
        for made in state.charges:
            if made.key == key:
                made.voided = True
        return {"key": key, "voided": True}

    @app.get("/charges")
    async def charges(key: str | None = None) -> dict[str, Any]:
        return {
            "charges": [vars(c) for c in state.charges if key is None or c.key == key],
            "requests": {k: n for k, n in state.requests.items() if key is None or k == key},
            "void_requests": {
                k: n for k, n in state.void_requests.items() if key is None or k == key
            },
        }

    @app.put("/behaviour/{buyer_id}")
    async def set_behaviour(buyer_id: str, body: Behaviour) -> dict[str, Any]:
        state.behaviours[buyer_id] = body
        return {"buyer_id": buyer_id, **body.model_dump()}

    @app.delete("/behaviour/{buyer_id}")
    async def reset_behaviour(buyer_id: str) -> dict[str, str]:
        state.behaviours.pop(buyer_id, None)
        return {"buyer_id": buyer_id}

    return app

"""What every service's HTTP API shares: problem+json errors, ``/healthz`` and ``/metrics``."""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import Database
from shared.telemetry import serving

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str = "", **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    """Validation errors as ``[{field, message}]``, fields as dotted paths."""
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]}
        for e in exc.errors()
    ]


def invalid(
    exc: ValidationError | RequestValidationError, title: str = "Invalid request"
) -> JSONResponse:
    return problem(422, title, "the request does not match its schema", errors=field_errors(exc))


def create_app(title: str, db: Database) -> FastAPI:
    """A FastAPI app with the shared error handling and operational endpoints."""
    app = FastAPI(title=title, version="1")

    @app.middleware("http")
    async def _trace(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        with serving(request.method, request.url.path, request.headers):
            return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Any:
        try:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return problem(503, "Unhealthy", f"database: {exc.__class__.__name__}")
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app

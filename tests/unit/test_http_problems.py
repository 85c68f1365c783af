"""Every answer of a service's HTTP API that is not a success is a problem body saying what
went wrong (shared/http.py), whatever FastAPI or an unforeseen error would have said."""

import logging
from typing import cast

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from shared.db import Database
from shared.http import PROBLEM, create_app
from shared.settings import Settings
from tests.unit.test_healthz import FakeDatabase


def service() -> FastAPI:
    return create_app("orders", cast(Database, FakeDatabase()), Settings())


async def call(app: FastAPI, method: str, path: str, **how: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        return await client.request(method, path, **how)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("input +8613912345678 of the request"),
        # Not transient, not a bad value: _database_error raises it on.
        asyncpg.UndefinedColumnError('column "input +8613912345678" does not exist'),
    ],
)
async def test_an_unexpected_error_is_a_500_problem_and_one_error_log_line(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """It was a plain-text "Internal Server Error" (not the contract's problem body), and its
    traceback was logged by the server, outside the request's trace, without its path."""
    app = service()

    @app.get("/broken/{part}")
    async def broken(part: str) -> None:
        raise error

    with caplog.at_level(logging.INFO):
        answer = await call(app, "GET", "/broken/here")
    assert (answer.status_code, answer.headers["content-type"]) == (500, PROBLEM), answer.text
    body = answer.json()
    assert body["title"] == "Internal Server Error" and body["detail"]
    assert "8613912345678" not in answer.text and "Error" not in body["detail"]
    [logged] = [r for r in caplog.records if r.exc_info]
    assert logged.levelno == logging.ERROR and "GET /broken/here" in logged.getMessage()
    assert logged.exc_info is not None and logged.exc_info[1] is error

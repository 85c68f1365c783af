"""Calling a service's admin HTTP API from the command line, with its problem answers shown,
as the token of ``CARAVAN_TOKEN`` (or the file ``CARAVAN_TOKEN_FILE``, or the development
token of ``caravan up``)."""

from typing import Any

import httpx
import typer

from caravan.output import console
from shared.http import bearer_headers
from shared.settings import Settings


def auth_headers() -> dict[str, str]:
    return bearer_headers(Settings().api_token())


def call(base: str, service: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """``method path`` on ``base``; an unreachable API exits 2, a problem answer exits 1
    (printed with the fields at fault, if any)."""
    try:
        headers = {**auth_headers(), **kwargs.pop("headers", {})}
        response = httpx.request(method, base + path, timeout=10, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]{service} API unreachable[/red]: {exc}")
        raise typer.Exit(2) from exc
    body: dict[str, Any] = response.json()
    if response.status_code >= 400:
        console.print(f"[red]{body.get('title', response.status_code)}[/red]: {body.get('detail')}")
        for error in body.get("errors", []):  # a 422's fields at fault
            console.print(f"  {error['field']}: {error['message']}")
        raise typer.Exit(1)
    return body

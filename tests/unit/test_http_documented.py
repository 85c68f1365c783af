"""Each service's OpenAPI (``/openapi.json``) declares every status docs/http.md says a route
answers, each error with its problem body, and a route declares no error the page does not say
it gives.

A route's bullet in the page's list (``- `PATCH /lots/{id}` (... 409 while ...)``) names
its own statuses; the page says the rest once for every route: 413 and 503 (any route), 422
for one with parameters or a body, 401, 403 and 429 for those needing a token (their
OpenAPI's ``security``), 409 for one that writes (a race lost at commit: no route declared it,
though any that writes may answer it), and that an id in a path that names nothing may be a
404. Every
status a bullet named was declared; seven routes declared errors their bullet did not give
(the 409s of ``POST /orders``, its cancel, credit adjustments and repayments; the 401 of the
pushes and the SMS receipts, which take no token; the platform's 502 and 404)."""

import importlib
import re
from http import HTTPStatus
from typing import Any

from caravan.checkout import REPO_ROOT
from services import SERVICES
from shared.http import PROBLEM
from shared.settings import Settings

PAGE = REPO_ROOT / "docs" / "http.md"
METHODS = "GET|HEAD|PUT|POST|PATCH|DELETE"
EVERY_ROUTE = {413, 503}
WITH_A_TOKEN = {401, 403, 429}
WRITES = {"post", "put", "patch", "delete"}  # each may lose a race at commit: 409
NO_RACE = {  # but those writing nothing at their commit, as the page says
    ("notifications", "put", "/opt-outs/{}"),
    ("notifications", "delete", "/opt-outs/{}"),
    ("notifications", "post", "/sms/receipts"),
}
NO_RACE_SERVICES = {"platform"}

Route = tuple[str, str, str]  # service, method (lowercase), path with its {} unnamed


def shape(path: str) -> str:
    """A path with its parameters unnamed: ``/lots/{id}`` and ``/lots/{lot_id}`` alike."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def lists(page: str) -> dict[str, list[str]]:
    """Each service's list of routes, a bullet a line."""
    found: dict[str, list[str]] = {}
    for line in page.split("\n## ", 1)[0].splitlines():
        if heading := re.fullmatch(r"\*\*(\w+)\*\* \(\d+\)", line):
            found[heading.group(1)] = []
        elif line.startswith("- `") and found:
            found[list(found)[-1]].append(line)
    return found


def documented(page: str) -> dict[Route, set[int]]:
    """The routes each service's list names, each with the statuses its bullet names."""
    found: dict[Route, set[int]] = {}
    for service, bullets in lists(page).items():
        for line in bullets:
            lead = line.split("` (", 1)[0].split("`: ", 1)[0]
            path = re.search(rf"(?:{METHODS}) (/[^`?\s]*)", lead)
            if path is None:
                continue  # /docs, /asyncapi: documents, not operations
            named = {int(n) for n in re.findall(r"(?<![\d.,])([2-5]\d\d)(?!\d|,\d)", line)}
            statuses = {n for n in named if n in HTTPStatus._value2member_map_}
            for method in re.findall(rf"`({METHODS})\b", lead):
                found[service, method.lower(), shape(path.group(1))] = statuses
    return found


async def served() -> tuple[dict[Route, dict[str, Any]], set[str]]:
    """Every operation of the five services' OpenAPI documents, built as each serves it, and
    the paths they serve outside them (``/docs``, ``/openapi.json``...)."""
    found, unlisted, _ = await documents()
    return found, unlisted


async def documents() -> tuple[dict[Route, dict[str, Any]], set[str], dict[str, Any]]:
    """:func:`served`, and the schemas of each service's document, by service."""
    settings = Settings(database_url="postgresql://caravan:secret@127.0.0.1:1/caravan")
    found: dict[Route, dict[str, Any]] = {}
    unlisted: set[str] = set()
    schemas: dict[str, Any] = {}
    for name in SERVICES:
        service = importlib.import_module(f"services.{name}.bootstrap").bootstrap(settings)
        try:
            app = service.asgi_app
            schemas[name] = app.openapi().get("components", {}).get("schemas", {})
            for path, operations in app.openapi()["paths"].items():
                for method, operation in operations.items():
                    found[name, method, shape(path)] = operation
            unlisted |= {r.path for r in app.routes if not getattr(r, "include_in_schema", 1)}
        finally:
            await service.db.dispose()
    return found, unlisted, schemas


def said_for_every(route: Route, operation: dict[str, Any]) -> tuple[set[int], set[int]]:
    """The statuses the page says once for every route like this one: those it answers,
    and those it may (404 for an id in its path that names nothing)."""
    answers = set(EVERY_ROUTE)
    if operation.get("parameters") or operation.get("requestBody"):
        answers.add(422)
    if operation.get("security"):
        answers |= WITH_A_TOKEN
    if route[1] in WRITES and route not in NO_RACE and route[0] not in NO_RACE_SERVICES:
        answers.add(409)
    return answers, answers | ({404} if "{}" in route[2] else set())


async def test_every_status_the_page_names_for_a_route_is_declared() -> None:
    routes = documented(PAGE.read_text())
    assert ("inventory", "patch", "/lots/{}") in routes and len(routes) > 30
    operations, _ = await served()
    unserved = sorted(" ".join(r) for r in routes.keys() - operations.keys())
    assert unserved == [], f"routes docs/http.md lists that no service serves: {unserved}"
    undeclared, bodiless = {}, []
    for route, statuses in routes.items():
        responses = operations[route]["responses"]
        said = statuses | said_for_every(route, operations[route])[0]
        if missing := sorted(s for s in said if str(s) not in responses):
            undeclared[" ".join(route)] = missing
        bodiless += [
            f"{' '.join(route)} {code}"
            for code, response in responses.items()
            if int(code) >= 400 and PROBLEM not in response.get("content", {})
        ]
    assert undeclared == {}, f"statuses docs/http.md gives that the OpenAPI does not: {undeclared}"
    assert bodiless == [], f"errors declared without their problem body: {bodiless}"


async def test_every_error_a_route_declares_is_in_the_page() -> None:
    routes = documented(PAGE.read_text())
    operations, _ = await served()
    unsaid = {}
    for route, statuses in routes.items():
        operation = operations[route]
        errors = {int(code) for code in operation["responses"] if int(code) >= 400}
        if extra := sorted(errors - statuses - said_for_every(route, operation)[1]):
            unsaid[" ".join(route)] = extra
    assert unsaid == {}, f"errors the OpenAPI declares that docs/http.md does not give: {unsaid}"


async def test_every_route_served_is_in_the_page() -> None:
    """Every operation a service serves is in its list, or among those the page says every
    service serves; every path served outside the OpenAPI is named (but Swagger UI's own
    ``/docs/oauth2-redirect``), and each route the page names anywhere (``GET /loans/{id}``)
    is served. ``/redoc`` was named nowhere in the page."""
    page = PAGE.read_text()
    assert "Every service also serves `/healthz` (`GET` or `HEAD`) and `/metrics`" in page
    assert "a request to a route that writes (`POST`, `PUT`, `PATCH`, `DELETE`)" in page
    words = " ".join(page.split())  # however the page's lines are folded
    assert "not the notifications service's opt-outs and receipts nor the platform" in words
    routes, bullets = documented(page), lists(page)
    operations, unlisted = await served()
    unnamed = [
        " ".join(route)
        for route in operations
        if route not in routes
        and route[2] not in ("/healthz", "/metrics")
        and not any(f"`{route[2]}`" in line for line in bullets[route[0]])
    ]
    unnamed += sorted(p for p in unlisted - {"/docs/oauth2-redirect"} if f"`{p}`" not in page)
    assert "/redoc" in unlisted and ("orders", "get", "/asyncapi") in operations
    assert unnamed == [], f"served, and named nowhere in docs/http.md: {unnamed}"
    anywhere = {(method, path) for _, method, path in operations}
    named = re.findall(rf"`({METHODS}) (/[^`?\s]*)", page)
    unserved = sorted({f"{m} {p}" for m, p in named if (m.lower(), shape(p)) not in anywhere})
    assert len(named) > 30 and unserved == [], f"named in docs/http.md, served by none: {unserved}"


def paged(page: str) -> dict[str, str]:
    """Each paged listing's path (its parameters unnamed) and the name of its list, as the
    page's paragraph on paging says them."""
    words = " ".join(page.split())
    paragraph = words.split("Listings that grow are paged one way", 1)[1].split(" follow the ")[0]
    items, others = paragraph.split("the others keep", 1)
    said = {shape(p): "items" for p in re.findall(r"`(?:GET )?(/[^`\s]*)`", items)}
    for name, inside in re.findall(r"`(\w+)` \(([^)]*)\)", others):
        said |= {shape(p): name for p in re.findall(r"`(?:GET )?(/[^`\s]*)`", inside)}
    return said


async def test_the_page_names_each_paged_listings_list_as_it_answers() -> None:
    """docs/http.md said every listing but ``GET /orders`` keeps its own list's name; ``GET
    /loans``, ``/repayments``, ``/payments``, ``/sms``, ``/lots/{id}/holds``... answer ``items``.
    A listing whose OpenAPI gives its body's fields is checked by them; the others (payments'
    and the platform adapter's, whose bodies are untyped dicts) are named all the same."""
    operations, _, schemas = await documents()
    answered, untyped = {}, set()
    for (service, method, path), operation in operations.items():
        if method != "get" or not any(
            p.get("name") == "cursor" for p in operation.get("parameters", [])
        ):
            continue
        body = operation["responses"]["200"]["content"]["application/json"]["schema"]
        fields = schemas[service].get(body.get("$ref", "").rsplit("/", 1)[-1], {})
        lists = [n for n, f in fields.get("properties", {}).items() if f.get("type") == "array"]
        if not lists:
            untyped.add(path)
        else:
            answered[path] = lists[0] if len(lists) == 1 else str(lists)
    assert answered["/orders"] == "items" and len(answered) + len(untyped) > 10, answered
    said = paged(PAGE.read_text())
    assert {path: said.get(path) for path in answered} == answered
    assert sorted(untyped - set(said)) == [], f"paged, its list named nowhere: {untyped}"


async def test_the_page_says_which_listings_give_20_items_a_page_by_default() -> None:
    """It said 20 for ``/orders`` and 100 for the others; payments' listings and ``/sms``
    give 20 too."""
    operations, _ = await served()
    twenty = {
        path
        for (_, method, path), operation in operations.items()
        for parameter in operation.get("parameters", [])
        if method == "get" and parameter["name"] == "limit"
        if parameter["schema"].get("default") == 20
    }
    words = " ".join(PAGE.read_text().split())
    said = words.split("`limit` (1-100; 20 for ", 1)[1].split(", 100 for the others)")[0]
    assert {shape(p) for p in re.findall(r"`(/[^`\s]*)`", said)} == twenty

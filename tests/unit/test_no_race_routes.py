"""The routes docs/http.md says cannot lose a race at commit (test_http_documented's
:data:`NO_RACE`, and every route of :data:`NO_RACE_SERVICES`) hold no row for their commit:
the 409 of a race lost is a unique violation met writing the rows a transaction held for it
(``Tx.insert_later``, ``Tx.update_later``), which they do not declare. Nothing held that true:
a route named there that came to hold such a row would answer a 409 its OpenAPI and the page
say it cannot.

Read from the code, not run: from each route's function, every function it may call, by name
(a module's function where the name says which; else every function and method of that name
in its service's package and in ``shared``, more than it calls); none may call
``insert_later`` or ``update_later`` but for the outbox's rows (``Tx.emit_raw``) and the audit
trail's (``audit.record_later``), whose only key is a serial. A function reached as a value
(passed, kept in an attribute under another name) is not followed, nor one made, not
written (a dataclass's ``__init__``)."""

import ast
import importlib
import inspect
import pkgutil
import textwrap
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from fastapi.routing import iter_route_contexts

from services import SERVICES
from shared.settings import Settings
from tests.unit.test_http_documented import NO_RACE, NO_RACE_SERVICES, WRITES, shape

HELD = {"insert_later", "update_later"}
"""What holds a row for the commit, whose key another request may have taken meanwhile."""
SERIAL_ONLY = {"shared.messaging.uow.Tx.emit_raw", "shared.auth.audit.record_later"}
"""Those that hold rows whose only key is a serial: no race."""

Function = Callable[..., Any]


def _modules(package: str) -> Iterator[ModuleType]:
    root = importlib.import_module(package)
    yield root
    for found in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not any(part in found.name for part in (".migrations", ".simulator", "__main__")):
            yield importlib.import_module(found.name)


def by_name(*packages: str) -> dict[str, list[Function]]:
    """Every function and method of ``packages``' modules, by its name."""
    named: dict[str, list[Function]] = {}
    for package in packages:
        for module in _modules(package):
            for value in vars(module).values():
                if getattr(value, "__module__", None) != module.__name__:
                    continue
                members = vars(value).items() if inspect.isclass(value) else [("", value)]
                for _, member in members:
                    member = getattr(member, "__func__", getattr(member, "fget", member))
                    if inspect.isfunction(member):
                        named.setdefault(member.__name__, []).append(member)
    return named


def _ours(value: Any) -> bool:
    return str(getattr(value, "__module__", "")).split(".")[0] in ("services", "shared")


def held(fn: Function, named: dict[str, list[Function]], seen: set[str]) -> list[str]:
    """Each way from ``fn`` to a row held for the commit (its calls, then what it called)."""
    key = f"{fn.__module__}.{fn.__qualname__}"
    if key in seen:
        return []
    seen.add(key)
    scope = dict(fn.__globals__)
    cells = fn.__closure__ or ()
    scope.update((n, c.cell_contents) for n, c in zip(fn.__code__.co_freevars, cells, strict=True))
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except OSError:  # made, not written (a dataclass's __init__)
        return []
    ways = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        call = node.func
        if isinstance(call, ast.Attribute) and call.attr in HELD:
            ways += [] if key in SERIAL_ONLY else [f"{key} calls {call.attr}"]
            continue
        called: list[Any] = []
        if isinstance(call, ast.Name):
            called = [scope.get(call.id)]
        elif isinstance(call, ast.Attribute):
            owner = scope.get(call.value.id) if isinstance(call.value, ast.Name) else None
            mod = isinstance(owner, ModuleType)
            called = [getattr(owner, call.attr, None)] if mod else named.get(call.attr, [])
        for value in called:
            if inspect.isclass(value) and _ours(value):
                value = vars(value).get("__init__")
            if inspect.isfunction(value) and _ours(value):
                ways += [f"{key} -> {way}" for way in held(value, named, seen)]
    return ways


async def test_the_routes_that_cannot_lose_a_race_hold_no_row_for_their_commit() -> None:
    settings = Settings(database_url="postgresql://caravan:secret@127.0.0.1:1/caravan")
    checked, ways = [], {}
    for name in SERVICES:
        service = importlib.import_module(f"services.{name}.bootstrap").bootstrap(settings)
        named = by_name(f"services.{name}", "shared")
        try:
            for route in iter_route_contexts(service.asgi_app.routes):
                for method in {m.lower() for m in route.methods or ()} & WRITES:
                    said = (name, method, shape(route.path or ""))
                    if said not in NO_RACE and name not in NO_RACE_SERVICES:
                        continue
                    assert route.endpoint is not None
                    checked.append(" ".join(said))
                    if found := held(route.endpoint, named, set()):
                        ways[" ".join(said)] = found
        finally:
            await service.db.dispose()
    assert {" ".join(r) for r in NO_RACE} <= set(checked), checked
    # a push, a refetch, a mapping's PUT and DELETE, resolving problems, retrying callbacks
    assert sum(r.startswith("platform ") for r in checked) >= 6, checked
    assert ways == {}, f"routes said not to lose a race at commit that hold rows for it: {ways}"


async def test_a_route_that_holds_a_row_for_its_commit_is_found() -> None:
    """What the test above reads finds such a row where there is one: placing an order
    (its row, held for the commit)."""
    settings = Settings(database_url="postgresql://caravan:secret@127.0.0.1:1/caravan")
    service = importlib.import_module("services.orders.bootstrap").bootstrap(settings)
    try:
        [place] = [
            r.endpoint
            for r in iter_route_contexts(service.asgi_app.routes)
            if r.path == "/orders" and "POST" in (r.methods or ())
        ]
        assert place is not None
        ways = held(place, by_name("services.orders", "shared"), set())
    finally:
        await service.db.dispose()
    assert any(way.endswith("OrderRepository.add calls insert_later") for way in ways), ways

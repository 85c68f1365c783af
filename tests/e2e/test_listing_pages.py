"""Listings that grow without bound are paged (shared/pagination.py): each answer holds at most
``limit`` items and a ``next_cursor`` that reaches the rest, against the running services."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.e2e.test_ops import cli
from tests.harness import System


async def every_page(
    api: httpx.AsyncClient, path: str, name: str, **params: Any
) -> list[list[dict[str, Any]]]:
    """The ``name`` items of each page of a listing, following ``next_cursor`` to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        answer = await api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body[name])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@contextlib.asynccontextmanager
async def an_apps_rows(caravan: System, table: str, insert: str) -> AsyncIterator[str]:
    """A new app's rows in ``platform.<table>``, put there by ``insert`` (naming it ``:app``)
    and deleted after: no instance calls such an app back, so its rows stay put."""
    app = f"t-many-{uuid.uuid4().hex[:6]}"
    await caravan.execute(f"insert into platform.{table} {insert}", app=app)
    try:
        yield app
    finally:
        await caravan.execute(f"delete from platform.{table} where app = :app", app=app)


def many_failed_callbacks(caravan: System) -> contextlib.AbstractAsyncContextManager[str]:
    """501 failed callbacks, created two by two at the same moment, their event ids
    ``<app>-001`` ... ``<app>-501``."""
    return an_apps_rows(
        caravan,
        "callbacks",
        "(event_id, app, platform_order_id, order_id, outcome, status, created_at)"
        " select :app || '-' || lpad(i::text, 3, '0'), :app, 'p' || i, 'o' || i, 'confirmed',"
        " 'failed', now() - (i / 2) * interval '1 second' from generate_series(1, 501) as i",
    )


async def test_more_than_500_failed_callbacks_are_all_reached(caravan: System) -> None:
    """``GET /platform/callbacks`` stopped at the newest 500 without saying so: after an
    incident with more, the older failed callbacks could not be seen nor retried by id."""
    async with many_failed_callbacks(caravan) as app, caravan.api("platform") as api:
        query = {"app": app, "status": "failed"}
        first = (await api.get("/platform/callbacks", params=query)).json()
        assert len(first["callbacks"]) == 100 and first["next_cursor"], first.keys()
        pages = await every_page(api, "/platform/callbacks", "callbacks", **query)
        assert [len(p) for p in pages] == [100, 100, 100, 100, 100, 1]
        listed = [c["event_id"] for p in pages for c in p]
        expected = [f"{app}-{i:03}" for i in range(1, 502)]
        # Newest first, ties by event id (descending), each once: the 501st reached.
        assert listed == sorted(expected, key=lambda e: (-(int(e[-3:]) // 2), e))[::-1]
        bad = await api.get("/platform/callbacks", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"] == [
            {"field": "query.cursor", "message": "unknown cursor: not one this API gave"}
        ]
        # A status none of the callbacks can have is refused, not listed as none.
        sent = await api.get("/platform/callbacks", params={"status": "sent"})
        assert sent.status_code == 422, sent.text
        assert [e["field"] for e in sent.json()["errors"]] == ["query.status"]


async def test_a_retry_of_every_failed_callback_names_the_first_100(caravan: System) -> None:
    """``POST /platform/callbacks/retry`` without ``event_ids`` answered every requeued id
    and wrote them all into one audit row; every one is still requeued."""
    async with many_failed_callbacks(caravan) as app:
        async with caravan.api("platform") as api:
            retried = await api.post("/platform/callbacks/retry", json={"app": app})
        assert retried.status_code == 200, retried.text
        first_100 = [f"{app}-{i:03}" for i in range(1, 101)]
        told = {"requeued": 501, "pending": 0, "failed": 501, "event_ids": first_100}
        assert retried.json() == told
        detail = await caravan.scalar(
            "select detail from auth.audit where action = 'platform.callbacks.retry'"
            " and target = :app",
            app=app,
        )
        assert detail == told
        pending = await caravan.scalar(
            "select count(*) from platform.callbacks where app = :app and status = 'pending'",
            app=app,
        )
        assert pending == 501


async def test_more_than_500_problems_are_all_reached(caravan: System) -> None:
    """``GET /platform/problems`` stopped at the latest 500 the same way."""
    problems = an_apps_rows(
        caravan,
        "problems",
        "(app, platform_order_id, kind, detail, first_seen_at) select :app,"
        " 'p' || lpad(i::text, 3, '0'), 'unmapped_sku', 'x', now() - (i / 3) * interval '1 second'"
        " from generate_series(1, 501) as i",
    )
    async with problems as app, caravan.api("platform") as api:
        pages = await every_page(api, "/platform/problems", "problems", app=app)
    assert [len(p) for p in pages] == [100, 100, 100, 100, 100, 1]
    listed = [p["platform_order_id"] for page in pages for p in page]
    assert sorted(listed) == [f"p{i:03}" for i in range(1, 502)]
    seen = [p["first_seen_at"] for page in pages for p in page]
    assert seen == sorted(seen, reverse=True)


async def test_an_apps_mappings_are_paged(caravan: System) -> None:
    """``GET /platform/{app}/mappings`` answered every mapping of the app at once."""
    mappings = an_apps_rows(
        caravan,
        "mappings",
        "(app, kind, external_id, value) select :app, 'sku', 'S' || lpad(i::text, 3, '0'),"
        ' \'{"sku": "T-PEPPER"}\' from generate_series(1, 150) as i',
    )
    async with mappings as app, caravan.api("platform") as api:
        pages = await every_page(api, f"/platform/{app}/mappings", "mappings")
        url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PLATFORM_HTTP_PORT']}"
        done = await cli(caravan, "platform", "mappings", app, "--kind", "sku", "--url", url)
    assert [len(p) for p in pages] == [100, 50]
    listed = [m["external_id"] for page in pages for m in page]
    assert listed == [f"S{i:03}" for i in range(1, 151)]
    # caravan platform mappings follows the pages to the last
    assert done.returncode == 0, done.stderr
    rows = [line.replace("│", " ").split() for line in done.stdout.splitlines()]
    assert [r[1] for r in rows if r[:1] == ["sku"]] == listed, done.stdout

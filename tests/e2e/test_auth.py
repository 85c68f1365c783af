"""Authentication on the running system: every admin and operations endpoint (enumerated from
the apps' own routes, so an endpoint added without a probe here fails the first test) refuses
a missing, malformed, unknown, revoked or under-scoped token with 401/403 and changes nothing;
allowed actions land in the audit trail; failed attempts are throttled; bodies are limited."""

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from caravan.inventory_cli import app as inventory_cli
from caravan.ops.dashboard import Dashboard
from caravan.tokens_cli import dev_token
from services import SERVICES
from services.inventory.bootstrap import bootstrap as inventory
from services.notifications.bootstrap import bootstrap as notifications
from services.orders.bootstrap import bootstrap as orders
from services.payments.bootstrap import bootstrap as payments
from services.platform.bootstrap import bootstrap as platform
from shared import days
from shared.auth.scopes import SCOPES
from shared.db.engine import SOCKET_GONE, address
from shared.events.orders import Buyer
from shared.http import THROTTLED
from shared.seed import SeedFile
from shared.settings import DEV_TOKEN_FILE, Settings
from tests.conftest import own_port
from tests.e2e.test_ops import cli
from tests.e2e.test_saga import order
from tests.harness import System

# Open on purpose (docs/security.md): the health probe, the documents of the public contract,
# the way into the operations page, and the gateway's receipts (a secret of their own).
OPEN = {
    ("orders", "GET", "/asyncapi.json"),
    ("orders", "GET", "/asyncapi"),
    ("notifications", "POST", "/sms/receipts"),
    ("platform", "POST", "/platform/{app}/push"),  # signed by the platform instead
    ("platform", "POST", "/platform/{app}/push/"),  # the same push, written with a slash
    ("dashboard", "GET", "/login"),
    ("dashboard", "POST", "/login"),
    ("dashboard", "POST", "/logout"),
}
OPEN_EVERYWHERE = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def enumerate_routes(database_url: str) -> set[tuple[str, str, str]]:
    """(app, method, path) of every route of the five services and the operations page."""
    settings = Settings(DATABASE_URL=database_url)
    apps = {
        name: build(settings).asgi_app  # composing connects to nothing
        for name, build in [
            ("orders", orders),
            ("inventory", inventory),
            ("payments", payments),
            ("notifications", notifications),
            ("platform", platform),
        ]
    }
    apps["dashboard"] = Dashboard(settings).create_app()
    found = set()
    for name, app in apps.items():
        # The app's own routes (hidden ones too) and, through the OpenAPI document, those of
        # the routers it includes.
        for route in app.routes:
            for method in getattr(route, "methods", None) or ():
                found.add((name, method, getattr(route, "path", "")))
        for path, operations in app.openapi()["paths"].items():
            found |= {(name, method.upper(), path) for method in operations}
    return {r for r in found if r[1] != "HEAD" and r[2] not in OPEN_EVERYWHERE} - OPEN


class World:
    """The real things each probe aims at, so that an accepted call would change them."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.buyer = f"auth-{tag}"
        self.phone = f"+86139{int(tag, 16) % 10**8:08d}"
        self.lot = f"AUTH-{tag}"
        self.new_lot = f"AUTH-NEW-{tag}"
        self.order_ref = f"AUTH-REF-{tag}"
        self.order_id = ""
        self.loan_id = ""
        self.app = f"auth-app-{tag}"
        self.mapped = f"MKT-{tag}"  # a platform SKU mapped by the fixture
        self.problem = f"P-{tag}"  # a platform order with an open problem, and a failed callback

    def seed(self) -> SeedFile:
        today = days.today()
        return SeedFile.model_validate(
            {
                "lots": [_lot(self.lot, "T-PEPPER", 50, today)],
                "buyers": [
                    {
                        "id": self.buyer,
                        "phone": self.phone,
                        "locale": "en",
                        "credit_limit_fen": 10**7,
                    }
                ],
            }
        )

    def probes(self) -> dict[tuple[str, str, str], tuple[str, Any]]:
        """For each protected route: a concrete path and a body that would act if allowed."""
        today = days.today()
        return {
            ("orders", "POST", "/orders"): ("/orders", _order_body(self)),
            ("orders", "GET", "/orders"): (f"/orders?buyer_id={self.buyer}", None),
            ("orders", "GET", "/orders/{order_id}"): (f"/orders/{self.order_id}", None),
            ("orders", "POST", "/orders/{order_id}/cancel"): (
                f"/orders/{self.order_id}/cancel",
                None,
            ),
            ("orders", "GET", "/ops/stuck-orders"): ("/ops/stuck-orders", None),
            **{(s, "GET", "/metrics"): ("/metrics", None) for s in SERVICES},
            ("inventory", "GET", "/stock"): ("/stock", None),
            ("inventory", "GET", "/sellers"): ("/sellers", None),
            ("inventory", "GET", "/stock/{sku}"): ("/stock/T-PEPPER", None),
            ("inventory", "GET", "/lots/{lot_id}"): (f"/lots/{self.lot}", None),
            ("inventory", "POST", "/lots"): ("/lots", _lot(self.new_lot, "T-PEPPER", 9, today)),
            ("inventory", "POST", "/lots/{lot_id}/adjustments"): (
                f"/lots/{self.lot}/adjustments",
                {"delta": -5, "reason": "probe"},
            ),
            ("inventory", "PATCH", "/lots/{lot_id}"): (
                f"/lots/{self.lot}",
                {"best_before": str(today + timedelta(days=9)), "reason": "probe"},
            ),
            ("inventory", "GET", "/lots/{lot_id}/adjustments"): (
                f"/lots/{self.lot}/adjustments",
                None,
            ),
            ("inventory", "GET", "/lots/{lot_id}/holds"): (f"/lots/{self.lot}/holds", None),
            ("inventory", "PUT", "/lots/{lot_id}/selling"): (
                f"/lots/{self.lot}/selling",
                {"on_sale": False, "reason": "probe"},
            ),
            ("inventory", "GET", "/reports/spoiled"): ("/reports/spoiled", None),
            ("payments", "GET", "/credit-lines/{buyer_id}"): (
                f"/credit-lines/{self.buyer}",
                None,
            ),
            ("payments", "PUT", "/credit-lines/{buyer_id}"): (
                f"/credit-lines/{self.buyer}",
                {"credit_limit_fen": 10**9},
            ),
            ("payments", "POST", "/credit-lines/{buyer_id}/adjustments"): (
                f"/credit-lines/{self.buyer}/adjustments",
                {"delta_fen": 10**8},
            ),
            ("payments", "GET", "/loans/{loan_id}"): (f"/loans/{self.loan_id}", None),
            ("payments", "GET", "/loans"): ("/loans", None),
            ("payments", "GET", "/repayments"): ("/repayments", None),
            ("payments", "GET", "/orders/{order_id}/payment"): (
                f"/orders/{self.order_id}/payment",
                None,
            ),
            ("payments", "GET", "/payments"): ("/payments?status=void_refused", None),
            ("payments", "GET", "/payables"): ("/payables", None),
            ("payments", "GET", "/payables/{seller_id}/orders"): (
                "/payables/T-SELLER/orders",
                None,
            ),
            ("payments", "POST", "/orders/{order_id}/payment/refund"): (
                f"/orders/{self.order_id}/payment/refund",
                {"reference": "PROBE-1", "reason": "probe"},
            ),
            ("payments", "POST", "/orders/{order_id}/payment/void"): (
                f"/orders/{self.order_id}/payment/void",
                {"reason": "probe", "orders_answered": 404},
            ),
            ("payments", "POST", "/orders/{order_id}/payment/charge-lost"): (
                f"/orders/{self.order_id}/payment/charge-lost",
                {"reason": "probe"},
            ),
            ("payments", "POST", "/loans/{loan_id}/repayments"): (
                f"/loans/{self.loan_id}/repayments",
                {},
            ),
            ("notifications", "PUT", "/opt-outs/{phone}"): (f"/opt-outs/{self.phone}", None),
            ("notifications", "DELETE", "/opt-outs/{phone}"): (f"/opt-outs/{self.phone}", None),
            ("notifications", "GET", "/opt-outs/{phone}"): (f"/opt-outs/{self.phone}", None),
            ("notifications", "GET", "/sms"): (f"/sms?phone={self.phone}", None),
            ("platform", "PUT", "/platform/{app}/mappings/{kind}/{external_id}"): (
                f"/platform/{self.app}/mappings/sku/{self.mapped}",
                {"sku": "T-HONEY"},
            ),
            ("platform", "GET", "/platform/{app}/mappings/{kind}/{external_id}"): (
                f"/platform/{self.app}/mappings/sku/{self.mapped}",
                None,
            ),
            ("platform", "DELETE", "/platform/{app}/mappings/{kind}/{external_id}"): (
                f"/platform/{self.app}/mappings/sku/{self.mapped}",
                None,
            ),
            ("platform", "GET", "/platform/{app}/mappings"): (
                f"/platform/{self.app}/mappings",
                None,
            ),
            ("platform", "GET", "/platform/problems"): ("/platform/problems", None),
            ("platform", "GET", "/platform/callbacks"): ("/platform/callbacks", None),
            ("platform", "POST", "/platform/callbacks/retry"): (
                "/platform/callbacks/retry",
                {"app": self.app},
            ),
            ("platform", "POST", "/platform/problems/resolve"): (
                "/platform/problems/resolve",
                {"app": self.app, "platform_order_id": self.problem},
            ),
            ("platform", "POST", "/platform/refetch"): (
                "/platform/refetch",
                {"app": self.app, "platform_order_id": "P-NONE"},
            ),
            ("dashboard", "GET", "/"): ("/", None),
            ("dashboard", "GET", "/api/snapshot"): ("/api/snapshot", None),
            ("dashboard", "GET", "/orders/{order_id}"): (f"/orders/{self.order_id}", None),
        }

    async def state(self, caravan: System) -> list[Any]:
        """Everything the probes could change, as it is now."""
        queries = [
            "select count(*) from orders.orders where order_ref = :ref",
            "select status, reason from orders.orders where order_id = :order_id",
            "select lot_id, sku, received, available, available_from, best_before, on_sale"
            " from inventory.lots where lot_id in (:lot, :new_lot) order by lot_id",
            "select count(*) from inventory.lot_adjustments where lot_id = :lot",
            "select count(*) from inventory.lot_corrections where lot_id = :lot",
            "select count(*) from inventory.lot_selling where lot_id = :lot",
            "select credit_limit_fen from payments.credit_lines where buyer_id = :buyer",
            "select status from payments.loans where loan_id = :loan_id",
            "select count(*) from payments.repayments where loan_id = :loan_id",
            "select status, refund_reference from payments.payments where order_id = :order_id",
            "select count(*) from notifications.opt_outs where phone = :phone",
            "select kind, external_id, value from platform.mappings where app = :app",
            "select kind, resolved_at from platform.problems where app = :app",
            "select event_id, status, attempts from platform.callbacks where app = :app",
            "select count(*) from auth.audit",
        ]
        params = {
            "ref": self.order_ref,
            "order_id": self.order_id,
            "lot": self.lot,
            "new_lot": self.new_lot,
            "buyer": self.buyer,
            "loan_id": self.loan_id,
            "phone": self.phone,
            "app": self.app,
        }
        return [
            [tuple(r) for r in await caravan.sql(q, **{k: v for k, v in params.items() if k in q})]
            for q in queries
        ]


def _lot(lot_id: str, sku: str, quantity: int, today: date) -> dict[str, Any]:
    return {
        "lot_id": lot_id,
        "sku": sku,
        "quantity": quantity,
        "available_from": str(today - timedelta(days=1)),
        "best_before": str(today + timedelta(days=30)),
    }


def _order_body(world: World) -> dict[str, Any]:
    return {
        "buyer": {"id": world.buyer, "phone": world.phone, "locale": "en"},
        "lines": [{"sku": "T-PEPPER", "quantity": 1}],
        "payment": {"method": "prepaid"},
    }


@pytest.fixture(scope="module")
async def world(caravan: System) -> AsyncIterator[World]:
    """The targets, with a confirmed microloan order (and its loan) of a buyer of its own."""
    w = World(uuid.uuid4().hex[:8])
    await caravan.seed(w.seed())
    req = order(Buyer(id=w.buyer, phone=w.phone, locale="en"), method="microloan", term=3)
    await caravan.request(req)
    w.order_id = await caravan.placed(req.order_ref)
    done = await caravan.outcome(w.order_id)
    assert done.type == "order.confirmed", done
    w.loan_id = done.data["payment"]["loan_id"]
    # An app the adapter is not configured with, but whose rows there are (another
    # instance's, or one configured no longer): its mappings are taken (one of no app is not).
    await caravan.execute(
        "insert into platform.mappings (app, kind, external_id, value)"
        " values (:app, 'sku', :x, cast(:v as jsonb))",
        app=w.app,
        x=w.mapped,
        v='{"sku": "T-PEPPER"}',
    )
    # What POST /platform/problems/resolve and /platform/callbacks/retry would change.
    await caravan.execute(
        "insert into platform.problems (app, platform_order_id, kind, detail)"
        " values (:app, :p, 'unmapped_sku', 'probe')",
        app=w.app,
        p=w.problem,
    )
    await caravan.execute(
        "insert into platform.callbacks"
        " (event_id, app, platform_order_id, order_id, outcome, status, attempts)"
        " values (:e, :app, :p, :o, 'confirmed', 'failed', 5)",
        e=f"auth-{w.tag}",
        app=w.app,
        p=w.problem,
        o=w.order_id,
    )
    yield w
    for table in ("problems", "callbacks", "mappings"):
        await caravan.execute(f"delete from platform.{table} where app = :app", app=w.app)


@pytest.fixture(scope="module")
async def dashboard(caravan: System) -> AsyncIterator[int]:
    """The operations page, run as ``caravan dashboard`` is, with the session's token."""
    port = own_port("http", __name__)
    async with caravan.operations_page(port):
        yield port


def _client(
    caravan: System, app: str, dashboard: int, source: str, token: str | None = None
) -> httpx.AsyncClient:
    if app != "dashboard":
        return caravan.api(app, token=token, source=source)
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{dashboard}",
        transport=httpx.AsyncHTTPTransport(local_address=source),
        headers={} if token is None else {"Authorization": f"Bearer {token}"},
        timeout=10,
    )


async def test_every_protected_endpoint_refuses_bad_tokens_and_changes_nothing(
    caravan: System, world: World, dashboard: int
) -> None:
    routes = enumerate_routes(caravan.infra.database_url)
    probes = world.probes()
    assert routes == set(probes), (
        f"routes without a probe here: {sorted(routes - set(probes))}; "
        f"probes of no route: {sorted(set(probes) - routes)}"
    )
    tag = uuid.uuid4().hex[:6]
    revoked = await caravan.issue_token(f"revoked-{tag}", *SCOPES)
    await caravan.revoke_token(f"revoked-{tag}")
    only_metrics = await caravan.issue_token(f"metrics-{tag}", "metrics")
    only_orders_read = await caravan.issue_token(f"orders-read-{tag}", "orders:read")
    # Every read scope and metrics: reading is all it may do, so every write is refused.
    reader = await caravan.issue_token(
        f"reader-{tag}", *(s for s in SCOPES if s.endswith(":read") or s == "metrics")
    )
    unknown = "cvn_" + uuid.uuid4().hex * 2
    before = await world.state(caravan)
    for i, (key, (path, body)) in enumerate(sorted(probes.items())):
        app, method, _ = key
        under = only_orders_read if key[2] == "/metrics" else only_metrics
        # Each route from its own loopback address: its four failures stay under the limit.
        async with _client(caravan, app, dashboard, f"127.0.2.{i + 1}") as client:
            for auth, status in [
                (None, 401),
                ("Bearer", 401),
                ("Bearer not-a-token", 401),
                (f"Basic {caravan.token}", 401),
                (f"Bearer {unknown}", 401),
                (f"Bearer {revoked}", 401),
                (f"Bearer {under}", 403),
            ]:
                headers = {"Idempotency-Key": world.order_ref}
                if auth is not None:
                    headers["Authorization"] = auth
                got = await client.request(method, path, json=body, headers=headers)
                assert got.status_code == status, (key, auth and auth[:12], got.text)
                assert got.headers["content-type"].startswith("application/problem+json"), key
                if status == 401:
                    assert got.headers["www-authenticate"].startswith("Bearer"), key
            if method != "GET":
                got = await client.request(
                    method,
                    path,
                    json=body,
                    headers={
                        "Idempotency-Key": world.order_ref,
                        "Authorization": f"Bearer {reader}",
                    },
                )
                assert got.status_code == 403, (key, "every read scope", got.text)
            if body is not None:  # a body that is not JSON, and no token: 401 (it was 422)
                got = await client.request(
                    method,
                    path,
                    content=b'{"broken":',
                    headers={
                        "Idempotency-Key": world.order_ref,
                        "Content-Type": "application/json",
                    },
                )
                assert got.status_code == 401, (key, "broken body", got.text)
    # No wait: every route does its work before it answers (none sets anything going
    # after), and what follows elsewhere starts from a row it wrote, which the state reads.
    assert await world.state(caravan) == before


async def _audit(caravan: System, actor: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in await caravan.sql(
            "select action, target, before, after from auth.audit where actor = :a order by id",
            a=actor,
        )
    ]


async def test_allowed_admin_actions_are_in_the_audit_trail(caravan: System, world: World) -> None:
    name = f"auditor-{uuid.uuid4().hex[:6]}"
    token = await caravan.issue_token(
        name, "inventory:write", "credit:write", "notifications:write", "platform:write"
    )
    lot = f"AUD-{uuid.uuid4().hex[:6]}"
    today = days.today()
    async with caravan.api("inventory", token=token) as api:
        assert (await api.post("/lots", json=_lot(lot, "T-PEPPER", 20, today))).status_code == 201
        adjusted = await api.post(f"/lots/{lot}/adjustments", json={"delta": -3, "reason": "mould"})
        assert adjusted.status_code == 201, adjusted.text
        assert (await api.get(f"/lots/{lot}")).status_code == 200  # write scope reads too
    async with caravan.api("payments", token=token) as api:
        put = await api.put(f"/credit-lines/{world.buyer}-2", json={"credit_limit_fen": 700})
        assert put.status_code == 200, put.text
        repaid = await api.post(
            f"/loans/{world.loan_id}/repayments",
            json={"amount_fen": 100},
            headers={"Idempotency-Key": f"aud-{lot}"},
        )
        assert repaid.status_code == 201, repaid.text
    async with caravan.api("notifications", token=token) as api:
        assert (await api.put(f"/opt-outs/{world.phone}")).status_code == 204
        assert (await api.delete(f"/opt-outs/{world.phone}")).status_code == 204
    mapping = f"/platform/{world.app}/mappings/buyer/nick-{lot}"
    async with caravan.api("platform", token=token) as api:
        assert (await api.put(mapping, json={"buyer_id": world.buyer})).status_code == 200
        assert (await api.delete(mapping)).status_code == 204
    rows = await _audit(caravan, name)
    assert [(r[0], r[1]) for r in rows] == [
        ("lot.add", lot),
        ("lot.adjust", lot),
        ("credit.set", f"{world.buyer}-2"),
        ("loan.repay", world.loan_id),
        ("sms.opt_out", world.phone),
        ("sms.opt_in", world.phone),
        ("platform.mapping.put", f"{world.app}/buyer/nick-{lot}"),
        ("platform.mapping.delete", f"{world.app}/buyer/nick-{lot}"),
    ]
    assert rows[0][2] is None and rows[0][3]["received"] == 20
    assert rows[1][2]["available"] == 20 and rows[1][3]["available"] == 17
    assert rows[2][2] is None and rows[2][3]["credit_limit_fen"] == 700
    assert rows[3][2]["remaining_fen"] - rows[3][3]["remaining_fen"] == 100
    assert rows[4][2:] == ({"opted_out": False}, {"opted_out": True})
    assert rows[6][2] is None and rows[6][3]["buyer_id"] == world.buyer
    assert rows[7][2]["buyer_id"] == world.buyer and rows[7][3] is None


async def test_tokens_are_issued_listed_and_revoked_from_the_cli(caravan: System) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    issued = await cli(caravan, "tokens", "issue", "--scope", "inventory:read", "--name", name)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()  # alone on stdout: TOKEN=$(caravan tokens issue ...)
    assert token.startswith("cvn_") and len(token) > 40 and "\n" not in token
    assert f"token {name} (inventory:read), shown once" in issued.stderr
    stored = await caravan.scalar("select hash from auth.tokens where name = :n", n=name)
    assert stored != token and token not in stored  # only the hash is kept
    async with caravan.api("inventory", token=token) as api:
        assert (await api.get("/stock/T-PEPPER")).status_code == 200
        assert (await api.post("/lots", json={})).status_code == 403
    listed = await cli(caravan, "tokens", "list")
    assert name in listed.stdout and "cvn_" not in listed.stdout
    bad = await cli(caravan, "tokens", "issue", "--scope", "root")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
    revoked = await cli(caravan, "tokens", "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    # Its time as every command says one (it printed Python's, "2026-12-07 09:38:13.842127+00:00"),
    # and again, that it was revoked before (it printed the same line, as if revoked now).
    when = re.fullmatch(
        rf"revoked {name} \(at (\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00)\)\n", revoked.stdout
    )
    assert when is not None, revoked.stdout
    again = await cli(caravan, "tokens", "revoke", name)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"token {name} was revoked before, at {when[1]}; nothing changed\n"
    started = time.monotonic()
    async with caravan.api("inventory", token=token) as api:
        while (status := (await api.get("/stock/T-PEPPER")).status_code) == 200:
            assert time.monotonic() - started < 5, "still accepted 5 s after the revocation"
            await asyncio.sleep(0.2)
    assert status == 401
    assert [(r[0], r[1]) for r in await _audit(caravan, "test-operator") if r[1] == name] == [
        ("token.issue", name),
        ("token.revoke", name),
    ]


async def test_the_cli_sends_its_token_and_shows_a_refusal(caravan: System) -> None:
    url = ["--url", f"http://127.0.0.1:{caravan.port('inventory')}"]
    allowed = CliRunner(env={"CARAVAN_TOKEN": caravan.token}).invoke(
        inventory_cli, ["stock", "T-PEPPER", *url]
    )
    assert allowed.exit_code == 0, allowed.output
    refused = await cli(
        caravan, "inventory", "stock", "T-PEPPER", *url, CARAVAN_TOKEN="cvn_" + "x" * 43
    )
    assert refused.returncode == 1, refused.stdout
    # Said with where the token came from (it overrides the development token) and what to do.
    assert refused.stderr.splitlines()[:2] == [
        "Unauthorized: the token is not valid",
        "the token sent is CARAVAN_TOKEN's (set, it overrides CARAVAN_TOKEN_FILE and"
        f" {DEV_TOKEN_FILE}): set it to a valid one (`caravan tokens issue --scope SCOPE`),"
        " or unset it",
    ], refused.stderr


async def test_a_refusal_of_a_token_known_is_logged_naming_it_and_the_scope_asked(
    caravan: System, caplog: pytest.LogCaptureFixture
) -> None:
    """A drill's refusal was logged "refused POST /orders from 127.0.0.1: scope": which
    storefront's token lacked which scope, the operator could not tell. A token known (valid
    and lacking the scope; revoked) is named now, never its secret; an unknown one as before
    (its name is not known, and a guess names nothing)."""
    tag = uuid.uuid4().hex[:6]
    reader = await caravan.issue_token(f"shop-{tag}", "orders:read")
    revoked = await caravan.issue_token(f"old-shop-{tag}", "orders:write")
    await caravan.revoke_token(f"old-shop-{tag}")
    unknown = "cvn_" + uuid.uuid4().hex * 2
    service = orders(Settings(DATABASE_URL=caravan.infra.database_url))  # its log in this process
    try:
        transport = httpx.ASGITransport(app=service.asgi_app, client=("10.0.0.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
            with caplog.at_level(logging.WARNING, logger="caravan.auth"):
                for token in (reader, revoked, unknown):
                    got = await client.post(
                        "/orders",
                        json={},
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": tag},
                    )
                    assert got.status_code in (401, 403), got.text
    finally:
        await service.db.dispose()
    said = [r.getMessage() for r in caplog.records if r.name == "caravan.auth"]
    assert said == [
        f"refused POST /orders from 10.0.0.7: scope (token 'shop-{tag}' lacks the scope"
        " orders:write)",
        f"refused POST /orders from 10.0.0.7: revoked (token 'old-shop-{tag}')",
        "refused POST /orders from 10.0.0.7: unknown",
    ]
    assert not any(secret in line for line in said for secret in (reader, revoked, unknown))


def _failures(text: str) -> Callable[[str], float]:
    values = {
        s.labels.get("reason", ""): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "caravan_auth_failures_total"
    }
    return lambda reason: values.get(reason, 0.0)


async def test_failed_attempts_are_throttled_per_address(caravan: System) -> None:
    """An address over the limit is refused every token inventory has not read valid before
    (a guess that happens to be right included), but not one it has: a storefront's worker
    is not locked out by a stale one, or a token-less probe, behind the same address."""
    source = f"127.0.3.{uuid.uuid4().int % 250 + 1}"
    never_used = await caravan.issue_token(f"throttle-{uuid.uuid4().hex[:8]}", "inventory:read")
    async with caravan.api("inventory") as elsewhere:
        assert (await elsewhere.get("/stock")).status_code == 200  # the session's token read
    async with caravan.api("inventory", token="cvn_" + "y" * 43, source=source) as bad:
        for _ in range(10):  # the default limit: 10 failures a minute
            assert (await bad.get("/stock")).status_code == 401
        throttled = await bad.get("/stock")
    assert throttled.status_code == 429
    assert throttled.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    async with caravan.api("inventory", token=never_used, source=source) as right_guess:
        refused = await right_guess.get("/stock")
    # A token just issued is told why it is refused, and what keeps the address refused.
    assert refused.status_code == 429, refused.text
    said = refused.json()["detail"]
    assert "only a token used here before is let in, not one just issued" in said, said
    assert said.endswith("(stop whatever keeps sending a refused token)"), said
    async with caravan.api("inventory", source=source) as good_token_same_address:
        assert (await good_token_same_address.get("/stock")).status_code == 200
    async with caravan.api("inventory") as elsewhere:
        assert (await elsewhere.get("/stock")).status_code == 200
        failures = _failures((await elsewhere.get("/metrics")).text)
    assert failures("unknown") >= 10 and failures("throttled") >= 2


async def test_bodies_over_the_limit_get_413_and_change_nothing(caravan: System) -> None:
    lot = f"BIG-{uuid.uuid4().hex[:6]}"
    padding = "x" * (1024 * 1024)
    big = _lot(lot, "T-PEPPER", 1, days.today()) | {"padding": padding}
    async with caravan.api("inventory") as api:
        sized = await api.post("/lots", json=big)
        assert sized.status_code == 413, sized.text
        assert sized.headers["content-type"].startswith("application/problem+json")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(3):
                yield b"[" + b"1," * 300_000

        chunked = await api.post(
            "/lots", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413, chunked.text
    assert await caravan.scalar("select count(*) from inventory.lots where lot_id = :l", l=lot) == 0


async def test_delivery_receipts_need_the_receipts_secret(caravan: System) -> None:
    async with caravan.api("notifications", token=None) as api:
        for params in [{}, {"key": "wrong"}]:
            got = await api.post("/sms/receipts", params=params, json=[])
            assert got.status_code == 401, got.text
        # A bearer token, even with every scope, is not the gateway's secret.
    async with caravan.api("notifications") as api:
        assert (await api.post("/sms/receipts", json=[])).status_code == 401
    secret = caravan.procs.env["CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET"]
    async with caravan.api("notifications", token=None) as api:
        got = await api.post("/sms/receipts", params={"key": secret}, json=[])
        assert got.status_code != 401, got.text


async def test_the_operations_page_lets_a_browser_in_with_a_token(
    caravan: System, dashboard: int
) -> None:
    base = f"http://127.0.0.1:{dashboard}"
    async with httpx.AsyncClient(base_url=base, headers={"accept": "text/html"}) as browser:
        first = await browser.get("/")
        assert first.status_code == 303 and first.headers["location"] == "/login"
        # A token unknown, or revoked: the form again, saying so as a 401 does, alike for
        # both (it was a redirect to the form, saying nothing).
        revoked = f"ops-page-revoked-{uuid.uuid4().hex[:8]}"
        gone = await caravan.issue_token(revoked, "ops")
        await caravan.revoke_token(revoked)
        for token in ("cvn_" + "z" * 43, gone):
            refused = await browser.post("/login", data={"token": token})
            assert refused.status_code == 401 and "text/html" in refused.headers["content-type"]
            assert (
                "<p class='warning'>the token is not valid: sign in with a valid token</p><form"
                in refused.text
            ), refused.text
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "caravan_token" not in browser.cookies
        # None typed in: the form again, in its words (it said "a bearer token is required").
        empty = await browser.post("/login", data={"token": " "})
        assert empty.status_code == 401 and "text/html" in empty.headers["content-type"]
        assert (
            "<p class='warning'>no token was typed in: sign in with a valid token</p><form"
            in empty.text
        ), empty.text
        assert "caravan_token" not in browser.cookies
        # A token without the scope ops: the form again, saying so (it was JSON, a 403).
        storefront = await caravan.issue_token(f"ops-page-{uuid.uuid4().hex[:8]}", "orders:read")
        lacking = await browser.post("/login", data={"token": storefront})
        assert lacking.status_code == 403 and "text/html" in lacking.headers["content-type"]
        assert "lacks the scope ops: sign in with a token that has it" in lacking.text
        assert "<form method='post' action='/login'>" in lacking.text, lacking.text
        assert "caravan_token" not in browser.cookies
        done = await browser.post("/login", data={"token": caravan.token})
        assert done.status_code == 303 and done.headers["location"] == "/"
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = await browser.get("/")
        assert page.status_code == 200 and "Caravan operations" in page.text
    # An address over the limit: the form again, saying how long to wait (it was JSON), the
    # 429 and its Retry-After kept; from an address of its own, lest it throttle the others.
    source = f"127.0.4.{uuid.uuid4().int % 250 + 1}"
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(
        base_url=base, headers={"accept": "text/html"}, transport=transport
    ) as browser:
        for _ in range(10):  # the default limit: 10 failures a minute
            assert (await browser.post("/login", data={"token": "x"})).status_code == 401
        throttled = await browser.post("/login", data={"token": "cvn_" + "z" * 43})
        # Its pages alike, for a browser not signed in (they were a JSON 429 to it).
        pages = [await browser.get("/"), await browser.get("/orders/o-1")]
    for answer in (throttled, *pages):
        assert answer.status_code == 429 and "text/html" in answer.headers["content-type"]
        wait = answer.headers["retry-after"]
        assert 1 <= int(wait) <= 60
        said = f"{THROTTLED}: try again in {wait} s"
        assert f"<p class='warning'>{said}</p><form" in answer.text, answer.text


async def test_the_first_up_on_a_machine_issues_a_development_token(
    caravan: System, tmp_path: Path
) -> None:
    path = tmp_path / "dev-token"
    url = caravan.infra.database_url
    token, new = await asyncio.to_thread(dev_token, url, path)
    assert new and path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600
    async with caravan.api("payments", token=token) as api:
        assert (await api.get("/metrics")).status_code == 200
    again, new_again = await asyncio.to_thread(dev_token, url, path)
    assert (again, new_again) == (token, False)  # later runs keep it
    name = await caravan.scalar(
        "select name from auth.tokens where revoked_at is null and name like 'dev-%'"
        " order by created_at desc limit 1"
    )
    assert await caravan.scalar("select scopes from auth.tokens where name = :n", n=name) == sorted(
        SCOPES
    )
    await caravan.revoke_token(name)
    replaced, new_after_revoke = await asyncio.to_thread(dev_token, url, path)
    assert new_after_revoke and replaced != token


async def test_in_a_postgresql_outage_a_token_read_before_still_opens_the_page_and_metrics(
    caravan: System, dashboard: int
) -> None:
    """With PostgreSQL stopped (``pg_ctl -m fast stop``), the operations page and every
    service's ``/metrics`` answered 503 "the database is not reachable" (each call's token
    is checked against ``auth.tokens``): the page README says is greyed in an outage was
    gone, and every scrape with it (CaravanServiceDown for all five services). A token read
    before keeps its verdict; one never seen gets 503 (it may be valid), never 401; /healthz
    names PostgreSQL and why (it said "FileNotFoundError"), not where (that is logged); an
    admin command says the service cannot reach its database, exit 2. Once
    PostgreSQL is back, a token revoked is refused within the cache's 2 s, as before."""
    tag = uuid.uuid4().hex[:6]
    seen = await caravan.issue_token(f"outage-seen-{tag}", "ops")
    never = await caravan.issue_token(f"outage-never-{tag}", "ops")
    apps = [*SERVICES, "dashboard"]

    async def answers(token: str) -> dict[str, int]:
        said = {}
        for app in apps:
            async with _client(caravan, app, dashboard, "127.0.7.1", token) as client:
                path = "/" if app == "dashboard" else "/metrics"
                said[app] = (await client.get(path)).status_code
        return said

    assert await answers(seen) == dict.fromkeys(apps, 200)
    pg = caravan.infra.local_postgres
    assert pg is not None and caravan.engine is not None, "this needs the project's PostgreSQL"
    where = address(create_async_engine(caravan.infra.database_url))
    why = SOCKET_GONE if where.startswith("/") else "Connection refused"
    await asyncio.to_thread(pg.stop, "fast")
    try:
        await asyncio.sleep(2.5)  # past the cache's 2 s: every check asks the database
        assert await answers(seen) == dict.fromkeys(apps, 200)
        assert await answers(never) == dict.fromkeys(apps, 503)
        for service in SERVICES:
            async with caravan.api(service, token=None) as api:
                health = await api.get("/healthz")
            assert health.status_code == 503, health.text
            said = health.json()["checks"]["database"]
            assert said == f"cannot reach PostgreSQL ({why})", (service, said)  # not where
        # An admin command through a service's API: a part of the system away, exit 2, to be
        # run again once PostgreSQL is back (it said "try again in 1 s" and exited 1).
        stuck = await cli(caravan, "stuck", CARAVAN_TOKEN=seen)
        assert (stuck.returncode, stuck.stderr.splitlines()) == (
            2,
            [
                "the orders service cannot reach its database (it answered 503): run this"
                " again once PostgreSQL is back"
            ],
        ), stuck.stdout
    finally:
        await asyncio.to_thread(pg.start)
        await caravan.engine.dispose()  # the test's own pooled connections died with it
    assert await answers(never) == dict.fromkeys(apps, 200)
    await caravan.revoke_token(f"outage-seen-{tag}")
    revoked = time.monotonic()
    while (said := await answers(seen)) != dict.fromkeys(apps, 401):
        assert time.monotonic() - revoked < 2.5, said
        await asyncio.sleep(0.2)

"""A token bound to its own orders (``caravan tokens issue --own-orders``, ``--source S``)
reaches, through the orders API, the orders it placed over HTTP and those of its sources,
nothing else: another client's order is as unknown (the same 404), missing from its lists,
not cancelled by it, and its Idempotency-Key refused without a word of that order. An
unbound token reaches every order, as every token did before. Payments is stopped for the
cancellations (``no_payments``): the orders stay pending."""

import json
import uuid
from typing import Any

import httpx

from shared.events.orders import OrderRequested
from shared.events.platform import PlatformOrderRequested
from tests.e2e.test_http import BODY
from tests.e2e.test_ops import cli
from tests.harness import System, ref, until

ORDERS_SCOPES = ("orders:read", "orders:write")
CREDIT_REFUSED = (
    "a token with the scope credit:read reads every buyer's credit line, loans and payments"
    " (payments keeps no order's client), whatever it is bound to: it cannot be bound"
)
NOTHING_BOUND = (
    "reads no order nor platform app: a binding (which limits orders:read, orders:write,"
    " platform:read) would change nothing; leave it unbound"
)


def _body(buyer: str) -> dict[str, Any]:
    return {**BODY, "buyer": {**BODY["buyer"], "id": buyer}}  # type: ignore[dict-item]


async def _client(caravan: System, prefix: str, sources: list[str] | None) -> httpx.AsyncClient:
    """A client of the orders API with a new token of both orders scopes (None: unbound)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return caravan.api("orders", await caravan.issue_token(name, *ORDERS_SCOPES, sources=sources))


async def _posted(client: httpx.AsyncClient, body: dict[str, Any], key: str) -> str:
    placed = await client.post("/orders", json=body, headers={"Idempotency-Key": key})
    assert placed.status_code == 202, placed.text
    return str(placed.json()["order_id"])


async def _as_unknown(client: httpx.AsyncClient, method: str, path: str, order_id: str) -> None:
    """``method path`` of ``order_id`` answers what it answers of an id no order has."""
    nobody = str(uuid.uuid4())
    unknown = await client.request(method, path.format(nobody))
    got = await client.request(method, path.format(order_id))
    assert unknown.status_code == 404, unknown.text
    assert (got.status_code, got.headers["content-type"]) == (404, unknown.headers["content-type"])
    assert got.json() == json.loads(unknown.text.replace(nobody, order_id))


async def _buyers(client: httpx.AsyncClient, buyer: str) -> set[str]:
    listed = await client.get("/orders", params={"buyer_id": buyer})
    assert listed.status_code == 200, listed.text
    return {o["order_id"] for o in listed.json()["items"]}


async def _by_ref(client: httpx.AsyncClient, source: str, order_ref: str) -> list[str]:
    listed = await client.get("/orders", params={"source": source, "order_ref": order_ref})
    assert listed.status_code == 200, listed.text
    return [o["order_id"] for o in listed.json()["items"]]


async def _reaches_within_the_cache(client: httpx.AsyncClient, buyer: str, ids: set[str]) -> None:
    """Wait until ``client`` lists ``ids`` alone of ``buyer``'s orders: a binding changed in
    place is honoured once each service's cache of the token has expired (2 s)."""
    await until(lambda: _buyers(client, buyer), f"the orders {ids} alone", 10, 0.2, ids.__eq__)


def _said(stderr: str) -> str:
    """What a refusal said, its box and folding undone."""
    return " ".join(stderr.replace("│", " ").split())


async def test_a_token_is_bound_at_issue_listed_so_and_a_binding_of_no_effect_refused(
    caravan: System,
) -> None:
    tag = uuid.uuid4().hex[:8]
    name, source = f"bound-{tag}", f"storefront/b-{tag}"
    issued = await cli(
        caravan, "tokens", "issue", "--scope", "orders:read", "--name", name, "--source", source
    )
    assert issued.returncode == 0, issued.stderr
    assert f"token {name} (orders:read; orders: own, {source}), shown once" in issued.stderr
    stored = "select sources from auth.tokens where name = :n"
    assert await caravan.scalar(stored, n=name) == [source]
    own = f"own-{tag}"
    issued = await cli(
        caravan, "tokens", "issue", "--scope", "orders:read", "--name", own, "--own-orders"
    )
    assert issued.returncode == 0, issued.stderr
    assert await caravan.scalar(stored, n=own) == []
    listed = (await cli(caravan, "tokens", "list")).stdout.splitlines()
    assert [line for line in listed if f"own, {source}" in line and name in line], listed
    audited = "select after from auth.audit where action = 'token.issue' and target = :n"
    assert await caravan.scalar(audited, n=name) == {
        "name": name,
        "scopes": ["orders:read"],
        "sources": [source],
    }
    for args, said in (
        (["--source", "a|b"], "a source may not contain '|' (a URI-reference has none)"),
        (["--source", "HTTP"], "source http is every HTTP client's orders"),
        (["--scope", "ops", "--own-orders"], "a token with the scope ops reaches every order"),
        (["--scope", "credit:read", "--own-orders"], CREDIT_REFUSED),
    ):
        refused = await cli(caravan, "tokens", "issue", "--scope", "orders:read", *args)
        assert refused.returncode == 2 and said in _said(refused.stderr), refused.stderr
    for args, said in (  # bound, they would reach what they reach unbound: it said bound
        (["inventory:read", "--own-orders"], f"inventory:read {NOTHING_BOUND}"),
        (["metrics", "--source", source], f"metrics {NOTHING_BOUND}"),
        (
            ["platform:read", "--source", "platform/t", "--client", name],
            f"--client places and reads orders as {name}: a token with neither orders:read"
            " nor orders:write places or reads none",
        ),
    ):
        refused = await cli(caravan, "tokens", "issue", "--name", f"n-{tag}", "--scope", *args)
        assert refused.returncode == 2 and said in _said(refused.stderr), refused.stderr
    assert (
        await caravan.scalar("select count(*) from auth.tokens where name = :n", n=f"n-{tag}") == 0
    )


async def test_bound_tokens_read_list_and_cancel_their_own_orders_alone(
    no_payments: System,
) -> None:
    caravan = no_payments
    tag = uuid.uuid4().hex[:8]
    buyer, storefront, platform = f"t-reach-{tag}", f"storefront/b-{tag}", f"platform/m-{tag}"
    shop_a = await _client(caravan, "shop-a", [])  # --own-orders
    shop_b = await _client(caravan, "shop-b", [storefront])  # --source storefront/b-...
    market = await _client(caravan, "market", [platform])  # --source platform/m-...
    anyone = await _client(caravan, "unbound", None)  # as every token before
    body = _body(buyer)
    a_ref, b_ref, kafka_ref, market_ref = ref("A"), ref("B"), ref("BK"), ref("M")
    a = await _posted(shop_a, body, a_ref)
    b = await _posted(shop_b, body, b_ref)
    await caravan.request(
        OrderRequested.model_validate({**body, "order_ref": kafka_ref}), storefront
    )
    kafka = await caravan.placed(kafka_ref, source=storefront)
    pushed = PlatformOrderRequested.model_validate({**body, "order_ref": market_ref})
    await caravan.publish(pushed, source=platform)
    from_market = await caravan.placed(market_ref, source=platform)
    reached = {shop_a: {a}, shop_b: {b, kafka}, market: {from_market}}
    every = {a, b, kafka, from_market}

    for client, own in reached.items():
        for order_id in own:
            got = await client.get(f"/orders/{order_id}")
            assert got.status_code == 200 and got.json()["order_id"] == order_id, got.text
        for order_id in every - own:
            await _as_unknown(client, "GET", "/orders/{}", order_id)
        assert await _buyers(client, buyer) == own
        assert await _by_ref(client, platform, market_ref) == [o for o in [from_market] if o in own]
        assert await _by_ref(client, "http", a_ref) == [o for o in [a] if o in own]
    for order_id in every:  # unbound: every order, as before
        assert (await anyone.get(f"/orders/{order_id}")).status_code == 200
    assert await _buyers(anyone, buyer) == every

    # Another's order is not cancelled: the same 404 as of no order, and it stays pending.
    for client, own in reached.items():
        for order_id in every - own:
            await _as_unknown(client, "POST", "/orders/{}/cancel", order_id)
    statuses = "select order_id, status from orders.orders where order_id = any(:ids)"
    assert dict(await caravan.sql(statuses, ids=list(every))) == dict.fromkeys(every, "pending")
    for client, order_id in ((shop_a, a), (shop_b, kafka), (market, from_market)):
        cancelled = await client.post(f"/orders/{order_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["reason"] == "cancelled_by_buyer"
    cancelled = await anyone.post(f"/orders/{b}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    for client in (shop_a, shop_b, market, anyone):
        await client.aclose()


async def test_a_token_bound_to_a_source_lists_its_orders_without_a_buyer(
    caravan: System,
) -> None:
    """A platform following its orders with its bound token asks which are still pending by
    its source alone (``GET /orders?source=platform/APP&status=pending``): it knows no buyer
    of ours, and it was refused 403, needing ``ops``, so that a drill's platform, after a
    restart of the centre, could ask only one order at a time where each of its 200 was; yet
    that token listed the same orders by our buyer's id. A source it is not bound to, and a
    token bound to none, are refused as before."""
    tag = uuid.uuid4().hex[:8]
    market, other = f"platform/m-{tag}", f"platform/n-{tag}"
    token = await caravan.issue_token(f"market-{tag}", "orders:read", sources=[market])
    bound = caravan.api("orders", token)
    unbound = await _client(caravan, "storefront", None)
    ours: set[str] = set()
    for n, source in enumerate([market, market, other]):
        body = _body(f"t-src-{tag}-{n}")
        pushed = PlatformOrderRequested.model_validate({**body, "order_ref": ref("S")})
        await caravan.publish(pushed, source=source)
        placed = await caravan.placed(pushed.order_ref, source=source)
        if source == market:
            ours.add(placed)

    listed = await bound.get("/orders", params={"source": market})
    assert listed.status_code == 200, listed.text
    assert {o["order_id"] for o in listed.json()["items"]} == ours
    assert {o["source"] for o in listed.json()["items"]} == {market}
    paged = await bound.get("/orders", params={"source": market, "limit": 1})
    assert paged.status_code == 200 and paged.json()["next_cursor"], paged.text
    since = await bound.get("/orders", params={"source": market, "since": "2026-01-01T00:00:00Z"})
    assert {o["order_id"] for o in since.json()["items"]} == ours, since.text
    its_source = f", or one of its sources (`source`: {market})"
    for params in ({"source": other}, {}, {"status": "pending"}):
        refused = await bound.get("/orders", params=params)
        assert refused.status_code == 403, (params, refused.text)
        assert refused.json()["detail"].endswith(its_source), refused.text
    refused = await unbound.get("/orders", params={"source": market})
    assert refused.status_code == 403, refused.text
    assert "one of its sources" not in refused.json()["detail"]
    for client in (bound, unbound):
        await client.aclose()


async def test_a_key_another_token_used_is_refused_to_a_bound_token_telling_nothing(
    caravan: System,
) -> None:
    """Every client of ``POST /orders`` shares one space of keys (the contract's source
    ``http``). A bound token sending a key another used, with its body or another, was
    given that order (id, status) or told its id in a 409: now both are one 409 saying the
    key is another client's (or placed before this Caravan kept who placed each order, said
    so, not by its migration). Its own key again is its order, as ever; an unbound token is
    answered as before."""
    tag = uuid.uuid4().hex[:8]
    shop_a = await _client(caravan, "keys-a", [])
    shop_b = await _client(caravan, "keys-b", [f"storefront/b-{tag}"])
    anyone = await _client(caravan, "keys-unbound", None)
    body, other = _body(f"t-keys-{tag}"), _body(f"t-keys-other-{tag}")
    key, unbound_key = ref("SWN"), ref("SWN")
    a = await _posted(shop_a, body, key)
    assert await _posted(shop_a, body, key) == a  # its own key again: its order
    by_unbound = await _posted(anyone, body, unbound_key)
    refusals = []
    for sent, used in ((body, key), (other, key), (body, unbound_key), (other, unbound_key)):
        refused = await shop_b.post("/orders", json=sent, headers={"Idempotency-Key": used})
        assert refused.status_code == 409, refused.text
        assert a not in refused.text and by_unbound not in refused.text
        refusals.append(refused.json())
    assert refusals[0]["title"] == "Idempotency-Key taken"
    assert "is not this token's: another client's" in refusals[0]["detail"]
    # In the storefront's terms, not the orders schema's (it named "orders migration 0009").
    before = "or placed before this Caravan kept who placed each order, maybe by you."
    assert before in refusals[0]["detail"] and "migration" not in refusals[0]["detail"]
    assert all(r == refusals[0] for r in refusals), refusals  # same body or not: alike
    # Unbound, as before: the same body is the order, another a 409 naming it.
    assert await _posted(anyone, body, key) == a
    reused = await anyone.post("/orders", json=other, headers={"Idempotency-Key": key})
    assert (reused.status_code, reused.json()["order_id"]) == (409, a)
    stored = "select count(*) from orders.orders where order_ref = any(:r)"
    assert await caravan.scalar(stored, r=[key, unbound_key]) == 2
    for client in (shop_a, shop_b, anyone):
        await client.aclose()


async def test_a_token_issued_to_replace_another_keeps_its_orders_and_keys(
    no_payments: System,
) -> None:
    """A leaked token is replaced: a new one issued, the first revoked. Bound to its own
    name, the new token reached none of the orders the first had placed, and the
    storefront's retry of an order under way (its key again) was refused as another
    client's. Issued ``--client OLD``, it places and reaches as the first did."""
    caravan, tag = no_payments, uuid.uuid4().hex[:8]
    old_name, new_name, buyer = f"rot-old-{tag}", f"rot-new-{tag}", f"t-rot-{tag}"
    old = caravan.api("orders", await caravan.issue_token(old_name, *ORDERS_SCOPES, sources=[]))
    key = ref("SWN")
    placed = await _posted(old, _body(buyer), key)
    await old.aclose()
    issued = await cli(
        caravan,
        *("tokens", "issue", "--scope", "orders:read", "--scope", "orders:write"),
        *("--name", new_name, "--client", old_name),
    )
    assert issued.returncode == 0, issued.stderr
    said = f"token {new_name} (orders:read, orders:write; orders: own as {old_name}), shown once"
    assert said in _said(issued.stderr)
    await caravan.revoke_token(old_name)
    new = caravan.api("orders", issued.stdout.strip())
    assert await _posted(new, _body(buyer), key) == placed  # the retry: the same order
    assert (await new.get(f"/orders/{placed}")).status_code == 200
    mine = await _posted(new, _body(buyer), ref("SWN"))
    assert await _buyers(new, buyer) == {placed, mine}
    stored = "select placed_by from orders.orders where order_id = any(:ids)"
    assert [r.placed_by for r in await caravan.sql(stored, ids=[placed, mine])] == [old_name] * 2
    listed = await cli(caravan, "tokens", "list")
    assert f"own as {old_name}" in _said(listed.stdout), listed.stdout
    other = await _client(caravan, "rot-other", [])  # another client's: still out of reach
    await _as_unknown(other, "GET", "/orders/{}", placed)
    misspelt = await cli(
        caravan, *("tokens", "issue", "--scope", "orders:read", "--client", f"rot-od-{tag}")
    )
    assert misspelt.returncode == 2, misspelt.stderr  # a drill's typo bound it to nobody's
    assert f"no token named 'rot-od-{tag}'" in _said(misspelt.stderr), misspelt.stderr
    third = await cli(  # rotated again: the new token's client is the first's, not its own
        caravan,
        *("tokens", "issue", "--scope", "orders:read", "--scope", "orders:write"),
        *("--name", f"rot-third-{tag}", "--client", new_name),
    )
    assert f"orders: own as {old_name})" in _said(third.stderr), third.stderr
    rotated = caravan.api("orders", third.stdout.strip())
    assert await _posted(rotated, _body(buyer), key) == placed
    cancelled = await rotated.post(f"/orders/{placed}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    for client in (new, other, rotated):
        await client.aclose()


async def test_a_token_is_bound_in_place_its_secret_unchanged_and_unbound_again(
    caravan: System,
) -> None:
    """A token issued before bindings existed (unbound) is bound in place: the storefront
    keeps its secret. It reaches what it placed since 2026-12-06 (placed_by kept while it
    was unbound), not another client's order, nor one placed before (placed_by NULL: no
    token kept, so no client's own). Refused as at issue; audited before/after; unbound,
    it reaches every order again."""
    tag = uuid.uuid4().hex[:8]
    name, buyer = f"inplace-{tag}", f"t-inplace-{tag}"
    shop = caravan.api("orders", await caravan.issue_token(name, *ORDERS_SCOPES))  # unbound
    other = await _client(caravan, "inplace-other", None)
    old_key = ref("OLD")
    before_upgrade = await _posted(shop, _body(buyer), old_key)
    await caravan.execute(  # as every order placed before 2026-12-06: no token kept
        "update orders.orders set placed_by = null where order_id = :o", o=before_upgrade
    )
    since = await _posted(shop, _body(buyer), ref("SWN"))
    others = await _posted(other, _body(buyer), ref("OTH"))
    every = {before_upgrade, since, others}
    assert await _buyers(shop, buyer) == every  # unbound: every order

    bound = await cli(caravan, "tokens", "bind", name, "--own-orders")
    assert bound.returncode == 0, bound.stderr
    said = f"token {name} bound: orders own (were all), its secret unchanged"
    assert _said(bound.stdout) == said
    await _reaches_within_the_cache(shop, buyer, {since})
    assert (await shop.get(f"/orders/{since}")).status_code == 200
    for order_id in (before_upgrade, others):
        await _as_unknown(shop, "GET", "/orders/{}", order_id)
    retried = await shop.post("/orders", json=_body(buyer), headers={"Idempotency-Key": old_key})
    assert retried.status_code == 409 and before_upgrade not in retried.text, retried.text
    assert "Yours: it stands, do not place it again" in retried.json()["detail"]  # its own
    audited = "select before, after from auth.audit where action = :a and target = :n order by id"
    unbound_view: dict[str, Any] = {"sources": None, "client": None}
    own_view = {**unbound_view, "sources": []}
    assert await caravan.sql(audited, a="token.bind", n=name) == [(unbound_view, own_view)]
    again = await cli(caravan, "tokens", "bind", name, "--own-orders")
    assert again.returncode == 0, again.stderr
    assert _said(again.stdout) == f"token {name}: orders own already, nothing changed"
    assert len(await caravan.sql(audited, a="token.bind", n=name)) == 1  # nothing changed
    listed = await cli(caravan, "tokens", "list")
    assert [line for line in listed.stdout.splitlines() if name in line and " own " in line]

    credit = f"inplace-credit-{tag}"
    await caravan.issue_token(credit, "orders:read", "credit:read")
    inventory = f"inplace-inventory-{tag}"
    await caravan.issue_token(inventory, "inventory:read")
    revoked = f"inplace-revoked-{tag}"
    await caravan.issue_token(revoked, "orders:read")
    await caravan.revoke_token(revoked)
    for args, refused_with in (
        ([name], "say which orders it reaches: --own-orders, --source S or --client OLD"),
        ([name, "--source", "HTTP"], "source http is every HTTP client's orders"),
        ([name, "--source", "a|b"], "a source may not contain '|'"),
        ([credit, "--own-orders"], CREDIT_REFUSED),
        ([inventory, "--own-orders"], f"inventory:read {NOTHING_BOUND}"),
        ([f"nobody-{tag}", "--own-orders"], f"no token named 'nobody-{tag}'"),
        ([revoked, "--own-orders"], f"token {revoked} is revoked: it reaches nothing"),
    ):
        refused = await cli(caravan, "tokens", "bind", *args)
        assert refused.returncode == 2 and refused_with in _said(refused.stderr), refused.stderr
    stored = "select name, sources from auth.tokens where name = any(:n)"
    assert dict(await caravan.sql(stored, n=[name, credit, inventory, revoked])) == {
        name: [],
        credit: None,
        inventory: None,
        revoked: None,
    }

    unbound = await cli(caravan, "tokens", "unbind", name)
    assert unbound.returncode == 0, unbound.stderr
    said = f"token {name} unbound: orders all (were own), its secret unchanged"
    assert _said(unbound.stdout) == said
    await _reaches_within_the_cache(shop, buyer, every)
    assert await caravan.sql(audited, a="token.unbind", n=name) == [(own_view, unbound_view)]
    for client in (shop, other):
        await client.aclose()

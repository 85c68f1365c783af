"""``caravan platform`` subcommands against the running platform adapter's admin API."""

import uuid
from functools import partial

from shared.seed import SeedFile
from tests.e2e.test_ops import cli as caravan_cli
from tests.e2e.test_platform import (
    APP,
    THE_APPS,
    Platform,
    callbacks,
    new_order,
    open_problems,
    placed_and_told,
    placed_once,
    platform,
    push,
    requested,
    resolutions_audited,
    unmapped_order,
)
from tests.e2e.test_seed_cli import texted
from tests.harness import System, until

__all__ = ["platform"]  # the adapter restarted with the test apps, for these tests too


async def cli(caravan: System, *args: str) -> tuple[int, str]:
    """``caravan platform ARGS``: its exit code, and what it said (a failure on stderr); the
    inventory and payments APIs (which ``map-sku`` and ``map-buyer`` ask) are the session's,
    as every command run by the tests finds them."""
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PLATFORM_HTTP_PORT']}"
    done = await caravan_cli(caravan, "platform", args[0], "--url", url, *args[1:])
    return done.returncode, done.stdout + done.stderr


async def seeded_buyer(caravan: System, buyer_id: str, **given: str) -> None:
    """Seed the buyer ``buyer_id`` (a credit line; ``given``: its phone, its locale), as
    ``map-buyer`` asks payments for one."""
    phone = given.pop("phone", "+8613900000001")
    buyer = {"id": buyer_id, "phone": phone, "credit_limit_fen": 100000, **given}
    await caravan.seed(SeedFile.model_validate({"buyers": [buyer]}))


async def mapping_audits(
    caravan: System, kind: str, external_id: str, app: str = APP
) -> list[tuple[str, str]]:
    """The audit trail's actions and actors on a mapping of ``app``, oldest first."""
    rows = await caravan.sql(
        "select action, actor from auth.audit where target = :t order by id",
        t=f"{app}/{kind}/{external_id}",
    )
    return [(action, actor) for action, actor in rows]


async def test_skus_and_buyers_are_mapped_listed_and_unmapped_from_the_command_line(
    caravan: System, platform: Platform
) -> None:
    """Operations mapped a platform SKU or buyer only with curl, and a SKU as written: a typo
    was found when an order through it was cancelled unknown_sku. ``map-sku`` asks inventory
    first and refuses (exit 2, nothing written) a SKU it does not have, unless
    ``--unchecked``; the next push of an order through a mapping made so is placed with it."""
    unknown, order_ref = await unmapped_order(platform.sim, "ALI-CMD")
    code, out = await cli(caravan, "map-sku", APP, unknown, "T-PEPER")
    assert code == 2, out
    assert out.startswith("not mapped: inventory has no SKU 'T-PEPER'"), out
    assert "--unchecked" in out, out
    mapping = f"/platform/{APP}/mappings/sku/{unknown}"
    assert (await platform.adapter.get(mapping)).status_code == 404
    assert await mapping_audits(caravan, "sku", unknown) == []
    code, out = await cli(caravan, "map-sku", APP, unknown, "T-PEPPER")
    assert (code, out) == (0, f"{APP}/sku/{unknown}: mapped to T-PEPPER\n")
    assert (await push(platform.sim, order_ref, kind="notice"))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)
    [request] = requested(caravan, order_ref)
    assert request.data["lines"] == [{"sku": "T-PEPPER", "quantity": 1}]

    nick = f"nick-cmd-{uuid.uuid4().hex[:6]}"
    await seeded_buyer(caravan, "t-cmd")
    code, out = await cli(
        caravan, "map-buyer", APP, nick, "t-cmd", "--phone", "139 1234 5678", "--locale", "ug-CN"
    )
    said = f"{APP}/buyer/{nick}: mapped to t-cmd (phone +8613912345678, ug-CN)\n"
    assert (code, out) == (0, said)
    buyers_order = await new_order(platform.sim, buyer=nick)
    assert (await push(platform.sim, buyers_order))["body"]["status"] == "accepted"
    await placed_once(caravan, buyers_order)
    [request] = requested(caravan, buyers_order)
    assert request.data["buyer"] == {"id": "t-cmd", "phone": "+8613912345678", "locale": "ug-CN"}

    coming = f"ALI-COMING-{uuid.uuid4().hex[:6]}"
    code, out = await cli(caravan, "map-sku", APP, coming, "T-NOT-YET", "--unchecked")
    said = f"{APP}/sku/{coming}: mapped to T-NOT-YET, not checked against inventory\n"
    assert (code, out) == (0, said)
    got = await platform.adapter.get(f"/platform/{APP}/mappings/sku/{coming}")
    assert got.json()["sku"] == "T-NOT-YET", got.text

    code, out = await cli(caravan, "mappings", APP)
    assert code == 0, out
    rows = {tuple(line.replace("│", " ").split()[:3]) for line in out.splitlines()}
    for row in (
        ("sku", unknown, "T-PEPPER"),
        ("sku", coming, "T-NOT-YET"),
        ("buyer", nick, "t-cmd"),
    ):
        assert row in rows, out
    code, out = await cli(caravan, "mappings", APP, "--kind", "buyer")
    assert code == 0 and nick in out and unknown not in out and " sku " not in out, out

    code, out = await cli(caravan, "unmap", APP, "sku", unknown)
    assert (code, out) == (0, f"{APP}/sku/{unknown}: unmapped (it mapped to T-PEPPER)\n")
    assert (await platform.adapter.get(mapping)).status_code == 404
    code, out = await cli(caravan, "unmap", APP, "sku", unknown)
    assert (code, out) == (0, f"{APP}/sku/{unknown}: no such mapping, nothing changed\n")
    code, out = await cli(caravan, "unmap", APP, "buyer", nick)
    said = f"{APP}/buyer/{nick}: unmapped (it mapped to t-cmd (phone +8613912345678, ug-CN))\n"
    assert (code, out) == (0, said)
    audited = await mapping_audits(caravan, "sku", unknown)  # as the CLI's token's name
    assert [a for a, _ in audited] == ["platform.mapping.put", "platform.mapping.delete"]
    assert all(actor.startswith("test-session-") for _, actor in audited), audited


async def test_a_mapping_of_an_app_the_adapter_does_not_know_is_refused(
    caravan: System, platform: Platform
) -> None:
    """``caravan platform map-sku farm-mal ...`` (an app mistyped) exited 0, mapped: every
    order of the real app was an unmapped problem. It is refused as a SKU inventory does not
    have is (exit 2, nothing written); listing or unmapping such an app's mappings is refused
    as listing its problems is (exit 1), not an empty table or "no such mapping"."""
    typo = f"t-mal-{uuid.uuid4().hex[:6]}"
    said = f"Unknown app: no app {typo!r}: not in CARAVAN_PLATFORM_APPS, and no mapping of it"
    said += f" {THE_APPS}"
    code, out = await cli(caravan, "map-sku", typo, "MALL-X", "T-PEPPER")
    assert (code, out.strip()) == (2, f"not mapped: {said}"), out
    await seeded_buyer(caravan, "t-cmd")
    code, out = await cli(caravan, "map-buyer", typo, "nick-x", "t-cmd")
    assert (code, out.strip()) == (2, f"not mapped: {said}"), out
    assert await mapping_audits(caravan, "sku", "MALL-X", typo) == []
    for args in (("mappings", typo), ("unmap", typo, "sku", "MALL-X")):
        code, out = await cli(caravan, *args)
        assert (code, out.strip()) == (1, said), out


async def test_a_buyer_payments_does_not_know_is_not_mapped(
    caravan: System, platform: Platform
) -> None:
    """``caravan platform map-buyer`` took any buyer id: a typo mapped a platform's buyer to
    a buyer nobody seeded, and each of their orders was placed for that one, texted in
    zh-CN whatever locale the buyer was seeded with. A buyer payments has no credit line of
    (each seeded buyer has one) is refused (exit 2, nothing written), unless ``--unchecked``;
    one it has, mapped without ``--locale``, is texted in the locale they were seeded with."""
    tag = uuid.uuid4().hex[:8]
    phone = f"+86137{uuid.uuid4().int % 10**8:08d}"  # this test's alone: SMS are counted
    ours, nick = f"B-{tag}", f"nick-{tag}"
    await seeded_buyer(caravan, ours, phone=phone, locale="ug-CN")
    code, out = await cli(caravan, "map-buyer", APP, nick, f"B-{tag}x")
    said = f"not mapped: payments has no credit line for buyer 'B-{tag}x', which caravan seed"
    assert code == 2 and out.startswith(said) and "--unchecked" in out, out
    assert len(out.strip().splitlines()) == 1, out
    mapping = f"/platform/{APP}/mappings/buyer/{nick}"
    assert (await platform.adapter.get(mapping)).status_code == 404
    assert await mapping_audits(caravan, "buyer", nick) == []

    code, out = await cli(caravan, "map-buyer", APP, nick, ours)
    said = f"{APP}/buyer/{nick}: mapped to {ours} (phone the platform's, the seeded locale,"
    assert code == 0 and out.startswith(said), out
    order_ref = await new_order(platform.sim, phone=phone, buyer=nick)
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    [sent, *_] = await caravan.wait_for(partial(texted, caravan, order_id, phone))
    assert sent.data["locale"] == "ug-CN", sent.data

    coming = f"nick-coming-{tag}"
    code, out = await cli(caravan, "map-buyer", APP, coming, f"B-NOT-YET-{tag}", "--unchecked")
    said = f"{APP}/buyer/{coming}: mapped to B-NOT-YET-{tag} (phone the platform's, the"
    assert code == 0 and out.startswith(said), out
    assert out.rstrip().endswith(", not checked against payments"), out
    # Prepaid, such a buyer's order is placed all the same, texted in zh-CN: none seeded.
    order_ref = await new_order(platform.sim, phone=phone, buyer=coming)
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    order_id = await placed_once(caravan, order_ref)
    [sent, *_] = await caravan.wait_for(partial(texted, caravan, order_id, phone))
    assert sent.data["locale"] == "zh-CN", sent.data


async def test_problems_are_listed_and_resolved_from_the_command_line(
    caravan: System, platform: Platform
) -> None:
    unknown, order_ref = await unmapped_order(platform.sim, "ALI-CLI")
    code, out = await cli(caravan, "problems", "--app", APP)
    assert code == 0, out
    lines = out.splitlines()
    [at] = [i for i, x in enumerate(lines) if order_ref in x]  # below its app and kind
    row = lines[at - 1] + lines[at]
    assert APP in row and "unmapped_sku" in row and unknown in row, out
    code, out = await cli(caravan, "resolve", APP, order_ref)
    assert (code, out) == (0, f"{APP}/{order_ref}: resolved unmapped_sku\n")
    code, out = await cli(caravan, "problems", "--app", APP)
    assert code == 0 and order_ref not in out, out
    code, out = await cli(caravan, "problems", "--app", APP, "--all")
    assert code == 0 and order_ref in out, out
    code, out = await cli(caravan, "resolve", APP, order_ref)
    assert (code, out) == (0, f"{APP}/{order_ref}: no open problem, nothing changed\n")
    assert await resolutions_audited(caravan, order_ref) == 1


async def test_resolving_an_order_the_adapter_has_never_seen_says_so(
    caravan: System, platform: Platform
) -> None:
    """An order of an app configured that the adapter keeps no row of (a typo of the
    platform's order id) said "no open problem, nothing changed", exit 0, as of one whose
    problems were settled: it is refused, exit 1, as an app unknown is, saying the adapter
    has never seen it; one placed without a problem still has no open problem."""
    never = f"W-404-{uuid.uuid4().hex[:8]}"
    code, out = await cli(caravan, "resolve", APP, never)
    said = f"Unknown order: the adapter has never seen order {never!r} of {APP}: none placed"
    assert code == 1 and out.startswith(said), out
    assert out.rstrip().endswith("a typo? nothing changed"), out
    body = {"app": APP, "platform_order_id": never}
    answer = await platform.adapter.post("/platform/problems/resolve", json=body)
    assert (answer.status_code, answer.json()["title"]) == (404, "Unknown order"), answer.text
    order_ref = await new_order(platform.sim)
    assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
    await placed_once(caravan, order_ref)
    code, out = await cli(caravan, "resolve", APP, order_ref)
    assert (code, out) == (0, f"{APP}/{order_ref}: no open problem, nothing changed\n")
    assert await resolutions_audited(caravan, never) == 0


async def test_a_mended_problem_is_placed_by_a_refetch_from_the_command_line(
    caravan: System, platform: Platform
) -> None:
    """A push answered ``problem`` keeps its push id: sent again once its SKU is mapped, it is
    answered as it was first (``problem``) and nothing is done, and the platform pushes only
    when the order changes.
    ``refetch`` fetches the order and decides on it as a push would (audited), counted apart
    from the pushes."""
    unknown, order_ref = await unmapped_order(platform.sim, "ALI-REFETCH")
    first = await push(platform.sim, order_ref, kind="notice", push_id=f"r-{uuid.uuid4().hex}")
    assert first["body"]["status"] == "problem", first
    code, out = await cli(caravan, "refetch", APP, order_ref)  # not mended yet: what is wrong
    assert (code, out) == (0, f"{APP}/{order_ref}: problem (unmapped_sku)\n")
    mapped = await platform.adapter.put(
        f"/platform/{APP}/mappings/sku/{unknown}", json={"sku": "T-PEPPER"}
    )
    assert mapped.status_code == 200, mapped.text
    again = await platform.adapter.post(f"/platform/{APP}/push", json=first["params"])
    assert again.json() == first["body"], again.text
    accepted = {"app": APP, "outcome": "accepted"}
    pushed = await caravan.gauge("platform", "caravan_platform_pushes_total", **accepted)
    refetched = await caravan.gauge("platform", "caravan_platform_refetches_total", **accepted)
    code, out = await cli(caravan, "refetch", APP, order_ref)
    assert (code, out) == (0, f"{APP}/{order_ref}: accepted\n")
    # counted as a refetch, not as a push the platform sent
    assert await caravan.gauge("platform", "caravan_platform_pushes_total", **accepted) == pushed
    after = await caravan.gauge("platform", "caravan_platform_refetches_total", **accepted)
    assert after == refetched + 1
    await placed_once(caravan, order_ref)
    assert await open_problems(platform, order_ref) == []
    code, out = await cli(caravan, "refetch", APP, order_ref)
    assert (code, out) == (0, f"{APP}/{order_ref}: duplicate\n")
    audited = await caravan.sql(
        "select detail ->> 'status', detail -> 'problems' from auth.audit"
        " where action = 'platform.refetch' and target = :t order by id",
        t=f"{APP}/{order_ref}",
    )
    # the problem's kinds, as its answer names them (the record lacked them)
    assert [tuple(row) for row in audited] == [
        ("problem", ["unmapped_sku"]),
        ("accepted", None),
        ("duplicate", None),
    ]
    code, out = await cli(caravan, "refetch", "t-nosuch", order_ref)
    assert code == 1 and "no app 't-nosuch'" in out, out


async def test_callbacks_are_listed_and_failed_ones_sent_again_from_the_command_line(
    caravan: System, platform: Platform
) -> None:
    order_ref = await new_order(platform.sim)
    order_id = await placed_and_told(caravan, platform, order_ref, "order.confirmed")
    code, out = await cli(caravan, "callbacks", "--platform-order-id", order_ref)
    assert code == 0, out
    lines = out.splitlines()
    [at] = [i for i, x in enumerate(lines) if order_ref in x]  # beside our order id
    assert order_id in lines[at] and "confirmed" in lines[at + 1], out  # its outcome below
    code, out = await cli(caravan, "callbacks", "--order-id", order_ref)  # not our order id
    said = "--order-id: not an order id of Caravan's, a UUID (GET /orders names it, found"
    assert code == 1 and said in out, out  # it was an empty table, exit 0
    assert out.rstrip().endswith("the platform's own is --platform-order-id"), out
    code, out = await cli(caravan, "retry", "--app", APP)  # none failed, or another test's
    nothing = f"no failed or pending callback of {APP}: nothing sent again"
    assert code == 0 and ("callback(s) sent again: " in out or out.strip() == nothing), out
    code, out = await cli(caravan, "retry", "no-such-event")
    assert code == 1 and "EVENT_IDS.0: not an event id: a UUID" in out, out  # as typed
    code, out = await cli(caravan, "retry")
    assert code == 2 and "name either --app or event ids" in out, out
    for listing, rows in (("callbacks", "callback"), ("problems", "problem")):  # not "none"
        code, out = await cli(caravan, listing, "--app", "nosuch")
        said = f"Unknown app: no app 'nosuch': not in CARAVAN_PLATFORM_APPS, and no {rows} of it"
        said += f" {THE_APPS}"
        assert (code, out.strip()) == (1, said), out
    code, out = await cli(caravan, "resolve", "nosuch", "MKT-1")  # said "no open problem"
    said = "Unknown app: no app 'nosuch': not in CARAVAN_PLATFORM_APPS, and no problem of it"
    assert (code, out.strip()) == (1, f"{said} {THE_APPS}"), out


async def test_a_callback_that_failed_is_listed_and_sent_again_from_the_command_line(
    caravan: System, platform: Platform
) -> None:
    """The platform's status API refuses the callback for good (409, not retried): it fails,
    ``callbacks --status failed`` lists it, and ``retry`` sends it again once the platform
    answers, after which it is listed delivered (``retry`` had been run only where there was
    nothing to send)."""
    refusing = {"seconds": 120, "apis": ["status"], "answer": 409}
    assert (await platform.sim.put("/down", json=refusing)).status_code == 200
    try:
        order_ref = await new_order(platform.sim)
        assert (await push(platform.sim, order_ref))["body"]["status"] == "accepted"
        outcome = await caravan.outcome(await placed_once(caravan, order_ref))

        async def listed(status: str) -> str:
            code, out = await cli(
                caravan, "callbacks", "--status", status, "--platform-order-id", order_ref
            )
            assert code == 0, out
            return out if outcome.id in out else ""

        out = await until(lambda: listed("failed"), "the callback failed", every=0.5)
        assert "409" in out, out  # its last error
        assert (await platform.sim.put("/down", json={"seconds": 0})).status_code == 200
        code, out = await cli(caravan, "retry", outcome.id)
        said = "1 callback(s) sent again: 1 failed, afresh; 0 pending, now, attempts kept"
        assert (code, out.splitlines()) == (0, [said]), out
        await until(lambda: listed("delivered"), "the callback delivered", every=0.5)
        applied = (await callbacks(platform.sim, order_ref))["callbacks"]
        assert [(c["status"], c["idempotency_key"]) for c in applied] == [("confirmed", outcome.id)]
        code, out = await cli(caravan, "retry", outcome.id)  # delivered: nothing to send
        said = "nothing sent again: no failed or pending callback among the 1 named (delivered,"
        assert code == 2 and said in " ".join(out.split()), out  # it said 0 of each, exit 0
    finally:
        await platform.sim.put("/down", json={"seconds": 0})
